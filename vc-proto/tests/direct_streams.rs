//! Version 3's direct output streams on the wire: the `StreamPark` frame and
//! `Request::ExecDirect`, pinned byte for byte, exchanged in memory over
//! `tokio::io::duplex`, and absent from a connection negotiated at version 2.

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};
use vc_proto::{
    codec, handshake_client, handshake_server, FrameError, FrameKind, FrameReader, FrameWriter,
    Hello, ProcessRef, ProcessSpec, Request, Response, StreamKind, StreamPark,
    DIRECT_STREAMS_VERSION, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
};

fn process() -> ProcessRef {
    ProcessRef {
        container_id: "c".into(),
        exec_id: Some("e".into()),
    }
}

fn park(stream: StreamKind) -> StreamPark {
    StreamPark {
        process: process(),
        stream,
        timeout_ms: 30_000,
    }
}

/// A peer that speaks only version 2, as agents and hosts before direct streams.
fn version_2(software: &str) -> Hello {
    Hello {
        min_version: 2,
        max_version: 2,
        software: software.into(),
    }
}

#[test]
fn versions() {
    assert_eq!(MAX_PROTOCOL_VERSION, 3);
    assert_eq!(MIN_PROTOCOL_VERSION, 2);
    assert_eq!(DIRECT_STREAMS_VERSION, 3);
}

#[test]
fn stream_park_bytes() {
    let bytes = codec::encode(&park(StreamKind::Stdout)).expect("encodes");
    assert_eq!(
        bytes,
        [0x01, b'c', 0x01, 0x01, b'e', 0x01, 0xfb, 0x30, 0x75]
    );
    let stderr = codec::encode(&StreamPark {
        timeout_ms: 5,
        ..park(StreamKind::Stderr)
    })
    .expect("encodes");
    assert_eq!(stderr, [0x01, b'c', 0x01, 0x01, b'e', 0x02, 0x05]);
    let back: StreamPark = codec::decode(&bytes).expect("decodes");
    assert_eq!(back, park(StreamKind::Stdout));
}

#[test]
fn exec_direct_bytes() {
    let request = Request::ExecDirect {
        process: process(),
        spec: ProcessSpec::default(),
        streams: vec![StreamKind::Stdout, StreamKind::Stderr],
    };
    let bytes = codec::encode(&request).expect("encodes");
    // Variant 25, then the process, then a default spec (all empty, zero,
    // false, None), then two streams.
    let spec = codec::encode(&ProcessSpec::default()).expect("encodes");
    let mut expected = vec![25, 0x01, b'c', 0x01, 0x01, b'e'];
    expected.extend_from_slice(&spec);
    expected.extend_from_slice(&[0x02, 0x01, 0x02]);
    assert_eq!(bytes, expected);
    let back: Request = codec::decode(&bytes).expect("decodes");
    assert_eq!(back, request);
    assert_eq!(back.name(), "exec-direct");
}

/// Host and agent at version 3: the host parks a connection, the agent
/// answers Ok, and the bytes after the Ok are raw (what a process writes
/// straight into the socket), read back exactly, then end-of-file.
#[tokio::test]
async fn park_then_raw_bytes_at_version_3() {
    let ((mut hr, mut hw), (mut ar, mut aw), version) =
        settled(Hello::ours("host"), Hello::ours("agent")).await;
    assert_eq!(version, 3);
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let sent = payload.clone();
    let agent = tokio::spawn(async move {
        let frame = ar.read_frame().await.expect("park frame");
        assert_eq!(frame.header.kind, FrameKind::StreamPark);
        assert_eq!(frame.header.version, 3);
        let parked: StreamPark = frame.decode(FrameKind::StreamPark).expect("decodes");
        assert_eq!(parked, park(StreamKind::Stderr));
        aw.write_message(FrameKind::Response, frame.header.id, &Response::Ok)
            .await
            .expect("ok");
        // From here on the connection is the process's: raw bytes, then close.
        let mut raw = ar.into_inner().unsplit(aw.into_inner());
        raw.write_all(&sent).await.expect("raw bytes");
        raw.shutdown().await.expect("end of output");
    });
    hw.write_message(FrameKind::StreamPark, 0, &park(StreamKind::Stderr))
        .await
        .expect("park");
    let (_, response) = hr
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("answer");
    assert_eq!(response, Response::Ok);
    let mut raw = hr.into_inner().unsplit(hw.into_inner());
    let mut got = Vec::new();
    raw.read_to_end(&mut got).await.expect("reads to EOF");
    assert_eq!(got, payload);
    agent.await.expect("agent task");
}

type Side = (
    FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
);

/// Host and agent sides of an in-memory connection after a handshake with
/// these Hellos; the version both settled on.
async fn settled(host: Hello, agent: Hello) -> (Side, Side, u16) {
    let (h, a) = duplex(256);
    let (hr, hw) = tokio::io::split(h);
    let (ar, aw) = tokio::io::split(a);
    let (mut hr, mut hw) = (FrameReader::new(hr), FrameWriter::new(hw));
    let (mut ar, mut aw) = (FrameReader::new(ar), FrameWriter::new(aw));
    let (host, agent) = tokio::join!(
        handshake_client(&mut hr, &mut hw, &host),
        handshake_server(&mut ar, &mut aw, &agent),
    );
    let version = host.expect("host").version;
    assert_eq!(agent.expect("agent").version, version);
    ((hr, hw), (ar, aw), version)
}

/// A version-2 agent and a version-3 host settle on 2; a park frame encoded
/// at 2 does not exist (unknown kind 5), so neither side can mistake it.
#[tokio::test]
async fn version_2_peer_has_no_park_frame() {
    let ((_, mut hw), (mut ar, _), version) =
        settled(Hello::ours("host"), version_2("old agent")).await;
    assert_eq!(version, 2);
    hw.write_message(FrameKind::StreamPark, 0, &park(StreamKind::Stdout))
        .await
        .expect("written");
    let err = ar.read_frame().await.expect_err("refused");
    assert!(matches!(err, FrameError::UnknownKind(5)), "{err:?}");
}

/// The other way round: a version-2 host and a version-3 agent settle on 2
/// too, and both at 3 settle on 3.
#[tokio::test]
async fn negotiation_picks_the_path() {
    let (_, _, version) = settled(version_2("old host"), Hello::ours("agent")).await;
    assert_eq!(version, 2);
    let (_, _, version) = settled(Hello::ours("host"), Hello::ours("agent")).await;
    assert_eq!(version, DIRECT_STREAMS_VERSION);
}
