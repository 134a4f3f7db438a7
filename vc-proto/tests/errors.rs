//! Every error a connection can hit, the handshake, and end-of-stream detection.

mod common;

use std::error::Error as _;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Serialize, Serializer};
use tokio::io::{duplex, AsyncRead, AsyncReadExt, ReadBuf};
use vc_proto::codec::{self, CodecError, DECODE_LIMIT};
use vc_proto::frame::{HANDSHAKE_VERSION, MAGIC};
use vc_proto::{
    handshake_client, handshake_server, FrameError, FrameKind, FrameReader, FrameWriter,
    HandshakeError, Header, Hello, Request, Response, DEFAULT_MAX_PAYLOAD, HEADER_LEN,
    MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
};

fn header(kind: FrameKind, length: u32) -> [u8; HEADER_LEN] {
    Header {
        version: vc_proto::PROTOCOL_VERSION,
        kind,
        id: 9,
        length,
    }
    .encode()
}

fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut bytes = header(kind, payload.len() as u32).to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

async fn read(bytes: &[u8]) -> Result<vc_proto::Frame, FrameError> {
    FrameReader::new(bytes).read_frame().await
}

async fn read_request(bytes: &[u8]) -> Result<(u64, Request), FrameError> {
    FrameReader::new(bytes)
        .read_message::<Request>(FrameKind::Request)
        .await
}

#[tokio::test]
async fn bad_magic() {
    let mut bytes = frame(FrameKind::Request, &[0]);
    bytes[..4].copy_from_slice(b"HTTP");
    let err = read(&bytes).await.expect_err("bad magic");
    assert!(
        matches!(err, FrameError::BadMagic(m) if &m == b"HTTP"),
        "{err:?}"
    );
    assert!(!err.is_clean_eof());
}

#[tokio::test]
async fn unsupported_version() {
    for version in [0, MAX_PROTOCOL_VERSION + 1, u16::MAX] {
        let mut bytes = frame(FrameKind::Request, &[0]);
        bytes[4..6].copy_from_slice(&version.to_le_bytes());
        let err = read(&bytes).await.expect_err("unsupported version");
        assert!(
            matches!(
                err,
                FrameError::UnsupportedVersion { version: v, min, max }
                    if v == version && min == MIN_PROTOCOL_VERSION && max == MAX_PROTOCOL_VERSION
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn reader_narrowed_to_a_version_refuses_others_but_reads_hello() {
    // A Request of this version is refused once the reader is narrowed to 7 ...
    let request = frame(FrameKind::Request, &[0]);
    let mut reader = FrameReader::new(&request[..]);
    reader.set_version(7);
    let err = reader.read_frame().await.expect_err("narrowed");
    assert!(
        matches!(
            err,
            FrameError::UnsupportedVersion {
                version: vc_proto::PROTOCOL_VERSION,
                min: 7,
                max: 7
            }
        ),
        "{err:?}"
    );
    // ... but a Hello at the handshake version is always readable.
    let hello = codec::encode(&Hello::ours("peer")).expect("encodes");
    let mut bytes = Header {
        version: HANDSHAKE_VERSION,
        kind: FrameKind::Hello,
        id: 0,
        length: hello.len() as u32,
    }
    .encode()
    .to_vec();
    bytes.extend_from_slice(&hello);
    let mut reader = FrameReader::new(&bytes[..]);
    reader.set_version(7);
    let (_, back) = reader
        .read_message::<Hello>(FrameKind::Hello)
        .await
        .expect("hello readable");
    assert_eq!(back, Hello::ours("peer"));
}

#[tokio::test]
async fn unknown_kind() {
    // 5 (`StreamPark`) exists from version 3 on; the frame here is version 3.
    for kind in [0u8, 6, 0xff] {
        let mut bytes = frame(FrameKind::Request, &[0]);
        bytes[6] = kind;
        let err = read(&bytes).await.expect_err("unknown kind");
        assert!(
            matches!(err, FrameError::UnknownKind(k) if k == kind),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn oversized_frame_is_refused_from_its_header() {
    // Only the header is sent: the reader must refuse from the length field
    // alone, without waiting for (or allocating) the payload.
    for length in [DEFAULT_MAX_PAYLOAD + 1, u32::MAX] {
        let bytes = header(FrameKind::Request, length);
        let err = read(&bytes).await.expect_err("oversized");
        assert!(
            matches!(err, FrameError::Oversized { length: l, max } if l == length && max == DEFAULT_MAX_PAYLOAD),
            "{err:?}"
        );
    }
    // A frame at exactly the cap passes the header check (and then ends early).
    let err = read(&header(FrameKind::Request, DEFAULT_MAX_PAYLOAD))
        .await
        .expect_err("truncated");
    assert!(matches!(err, FrameError::Truncated { .. }), "{err:?}");
}

#[tokio::test]
async fn custom_cap_is_honoured_and_clamped() {
    let bytes = frame(FrameKind::Request, &[0; 17]);
    let err = FrameReader::new(&bytes[..])
        .with_max_payload(16)
        .read_frame()
        .await
        .expect_err("over the custom cap");
    assert!(
        matches!(
            err,
            FrameError::Oversized {
                length: 17,
                max: 16
            }
        ),
        "{err:?}"
    );
    // A cap above the default is clamped to it.
    let bytes = header(FrameKind::Request, DEFAULT_MAX_PAYLOAD + 1);
    let err = FrameReader::new(&bytes[..])
        .with_max_payload(u32::MAX)
        .read_frame()
        .await
        .expect_err("clamped cap");
    assert!(
        matches!(err, FrameError::Oversized { max, .. } if max == DEFAULT_MAX_PAYLOAD),
        "{err:?}"
    );
}

#[tokio::test]
async fn truncated_header() {
    let bytes = frame(FrameKind::Request, &[0]);
    for cut in 1..HEADER_LEN {
        let err = read(&bytes[..cut]).await.expect_err("truncated header");
        assert!(
            matches!(err, FrameError::Truncated { got, expected: HEADER_LEN } if got == cut),
            "{err:?}"
        );
        assert!(!err.is_clean_eof(), "a partial header is not a clean end");
    }
}

#[tokio::test]
async fn truncated_payload() {
    let bytes = frame(FrameKind::Request, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for cut in HEADER_LEN..bytes.len() {
        let err = read(&bytes[..cut]).await.expect_err("truncated payload");
        assert!(
            matches!(err, FrameError::Truncated { got, expected } if got == cut && expected == HEADER_LEN + 10),
            "{err:?}"
        );
        assert!(!err.is_clean_eof(), "a partial frame is not a clean end");
    }
}

#[tokio::test]
async fn undecodable_payload() {
    for payload in [&[][..], &[0xff][..], &[200, 1, 2][..], &[5, 10, b'x'][..]] {
        let err = read_request(&frame(FrameKind::Request, payload))
            .await
            .expect_err("undecodable");
        assert!(
            matches!(
                err,
                FrameError::Undecodable {
                    kind: FrameKind::Request,
                    source: CodecError::Decode(_)
                }
            ),
            "{payload:?}: {err:?}"
        );
    }
    // Invalid UTF-8 in a string.
    let err = read_request(&frame(FrameKind::Request, &[5, 2, 0xc3, 0x28]))
        .await
        .expect_err("bad utf-8");
    assert!(matches!(err, FrameError::Undecodable { .. }), "{err:?}");
    // An out-of-range bool.
    let mut payload = codec::encode(&Request::Signal {
        process: common::main_process(),
        signal: 1,
        all: true,
    })
    .expect("encodes");
    *payload.last_mut().expect("not empty") = 2;
    let err = read_request(&frame(FrameKind::Request, &payload))
        .await
        .expect_err("bad bool");
    assert!(matches!(err, FrameError::Undecodable { .. }), "{err:?}");
}

#[tokio::test]
async fn trailing_bytes() {
    let mut payload = codec::encode(&Request::Ping).expect("encodes");
    payload.extend_from_slice(&[0, 0]);
    assert!(matches!(
        codec::decode::<Request>(&payload),
        Err(CodecError::Trailing(2))
    ));
    let err = read_request(&frame(FrameKind::Request, &payload))
        .await
        .expect_err("trailing");
    assert!(
        matches!(
            err,
            FrameError::Undecodable {
                kind: FrameKind::Request,
                source: CodecError::Trailing(2)
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn unexpected_kind() {
    let payload = codec::encode(&Response::Ok).expect("encodes");
    let err = read_request(&frame(FrameKind::Response, &payload))
        .await
        .expect_err("unexpected kind");
    assert!(
        matches!(
            err,
            FrameError::UnexpectedKind {
                expected: FrameKind::Request,
                got: FrameKind::Response
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn too_large_to_send_writes_nothing() {
    let request = Request::StartContainer {
        container_id: "x".repeat(DEFAULT_MAX_PAYLOAD as usize),
    };
    let (client, mut server) = duplex(1024);
    let mut writer = FrameWriter::new(client);
    let err = writer
        .write_message(FrameKind::Request, 1, &request)
        .await
        .expect_err("too large");
    assert!(
        matches!(
            err,
            FrameError::TooLargeToSend { length, max }
                if length > DEFAULT_MAX_PAYLOAD as usize && max == DEFAULT_MAX_PAYLOAD
        ),
        "{err:?}"
    );
    // The connection is still usable: nothing of the refused frame was written.
    writer
        .write_message(FrameKind::Request, 2, &Request::Ping)
        .await
        .expect("writes");
    drop(writer);
    let mut bytes = Vec::new();
    server.read_to_end(&mut bytes).await.expect("reads");
    let (id, back) = read_request(&bytes).await.expect("one frame");
    assert_eq!((id, back), (2, Request::Ping));
}

#[tokio::test]
async fn largest_frame_that_fits_is_sent_and_read() {
    // Variant byte + 5-byte varint length + string = exactly the cap.
    let request = Request::StartContainer {
        container_id: "y".repeat(DEFAULT_MAX_PAYLOAD as usize - 6),
    };
    let payload = codec::encode(&request).expect("encodes");
    assert_eq!(payload.len(), DEFAULT_MAX_PAYLOAD as usize);
    let (client, server) = duplex(64 * 1024);
    let writer = tokio::spawn(async move {
        let mut writer = FrameWriter::new(client);
        writer
            .write_message(FrameKind::Request, 3, &request)
            .await
            .expect("writes the largest frame");
        request
    });
    let (id, back) = FrameReader::new(server)
        .read_message::<Request>(FrameKind::Request)
        .await
        .expect("reads the largest frame");
    assert_eq!(id, 3);
    assert_eq!(back, writer.await.expect("writer task"));
}

/// A value whose serialization always fails.
struct Unserializable;

impl Serialize for Unserializable {
    fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refuses to serialize"))
    }
}

#[tokio::test]
async fn unencodable_message() {
    assert!(matches!(
        codec::encode(&Unserializable),
        Err(CodecError::Encode(_))
    ));
    let (client, _server) = duplex(64);
    let err = FrameWriter::new(client)
        .write_message(FrameKind::Request, 1, &Unserializable)
        .await
        .expect_err("unencodable");
    assert!(
        matches!(
            err,
            FrameError::Unencodable {
                kind: FrameKind::Request,
                source: CodecError::Encode(_)
            }
        ),
        "{err:?}"
    );
}

#[test]
fn decoded_value_over_the_memory_budget() {
    // 4 MiB of five-byte routes (every field None) would be ~100 MiB of Routes.
    let count = (DECODE_LIMIT / 5 - 16) as u32;
    let mut payload = vec![10, 252];
    payload.extend_from_slice(&count.to_le_bytes());
    payload.resize(payload.len() + 5 * count as usize, 0);
    assert!(payload.len() <= DEFAULT_MAX_PAYLOAD as usize);
    let err = codec::decode::<Response>(&payload).expect_err("over budget");
    assert!(
        matches!(err, CodecError::TooLarge { limit } if limit == DECODE_LIMIT),
        "{err:?}"
    );
    // The same shape at a realistic size decodes.
    let mut payload = vec![10, 200];
    payload.resize(payload.len() + 5 * 200, 0);
    match codec::decode::<Response>(&payload).expect("decodes") {
        Response::Routes(routes) => assert_eq!(routes.len(), 200),
        other => panic!("decoded {other:?}"),
    }
}

#[test]
fn huge_length_prefixes_are_refused() {
    // A string claiming u64::MAX bytes, and a Vec claiming u64::MAX elements.
    let mut string = vec![5, 253];
    string.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(codec::decode::<Request>(&string).is_err());
    let mut routes = vec![10, 253];
    routes.extend_from_slice(&u64::MAX.to_le_bytes());
    assert!(codec::decode::<Response>(&routes).is_err());
}

#[test]
fn error_messages_do_not_repeat_their_source() {
    let err = FrameError::Undecodable {
        kind: FrameKind::Request,
        source: CodecError::Trailing(3),
    };
    let source = err.source().expect("has a source").to_string();
    assert!(!err.to_string().contains(&source), "{err}");
    let err = HandshakeError::Frame(FrameError::UnknownKind(9));
    let source = err.source().expect("has a source").to_string();
    assert!(!err.to_string().contains(&source), "{err}");
    let err = FrameError::Io(io::Error::other("boom"));
    assert!(!err.to_string().contains("boom"), "{err}");
}

/// A reader that fails on its first read.
struct Broken;

impl AsyncRead for Broken {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
    }
}

#[tokio::test]
async fn io_errors_are_reported_as_io() {
    let err = FrameReader::new(Broken)
        .read_frame()
        .await
        .expect_err("broken");
    assert!(
        matches!(&err, FrameError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
    assert!(!err.is_clean_eof());
}

#[tokio::test]
async fn clean_eof_between_frames() {
    let err = read(&[]).await.expect_err("empty stream");
    assert!(err.is_clean_eof(), "{err:?}");

    let (client, server) = duplex(1024);
    let mut writer = FrameWriter::new(client);
    writer
        .write_message(FrameKind::Request, 1, &Request::Ping)
        .await
        .expect("writes");
    drop(writer);
    let mut reader = FrameReader::new(server);
    let (id, request) = reader
        .read_message::<Request>(FrameKind::Request)
        .await
        .expect("reads the frame");
    assert_eq!((id, request), (1, Request::Ping));
    let err = reader.read_frame().await.expect_err("closed");
    assert!(err.is_clean_eof(), "{err:?}");
}

/// Two connected (reader, writer) pairs: the host's and the agent's.
type End = (
    FrameReader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
    FrameWriter<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
);

fn connection() -> (End, End) {
    let (host, agent) = duplex(4096);
    let (hr, hw) = tokio::io::split(host);
    let (ar, aw) = tokio::io::split(agent);
    (
        (FrameReader::new(hr), FrameWriter::new(hw)),
        (FrameReader::new(ar), FrameWriter::new(aw)),
    )
}

#[tokio::test]
async fn handshake_agrees_on_the_highest_common_version() {
    let ((mut hr, mut hw), (mut ar, mut aw)) = connection();
    let host_hello = Hello::ours("vc-host 0.1.0");
    let agent_hello = Hello::ours("vc-agent 0.1.0");
    let (host, agent) = tokio::join!(
        handshake_client(&mut hr, &mut hw, &host_hello),
        handshake_server(&mut ar, &mut aw, &agent_hello),
    );
    let host = host.expect("host side");
    let agent = agent.expect("agent side");
    assert_eq!(host.version, vc_proto::PROTOCOL_VERSION);
    assert_eq!(agent.version, vc_proto::PROTOCOL_VERSION);
    assert_eq!(host.peer, agent_hello);
    assert_eq!(agent.peer, host_hello);

    // Requests flow after the handshake.
    hw.write_message(FrameKind::Request, 5, &Request::Health)
        .await
        .expect("host sends");
    let (id, request) = ar
        .read_message::<Request>(FrameKind::Request)
        .await
        .expect("agent reads");
    assert_eq!((id, request), (5, Request::Health));
}

#[test]
fn negotiate_picks_the_highest_common_version() {
    let range = |min, max| Hello {
        min_version: min,
        max_version: max,
        software: String::new(),
    };
    assert_eq!(range(1, 3).negotiate(&range(2, 5)), Some(3));
    assert_eq!(range(2, 5).negotiate(&range(1, 3)), Some(3));
    assert_eq!(range(1, 1).negotiate(&range(1, 1)), Some(1));
    assert_eq!(range(1, 2).negotiate(&range(3, 4)), None);
    assert_eq!(range(3, 4).negotiate(&range(1, 2)), None);
    // A malformed range (min above max) has nothing in common with anything.
    assert_eq!(range(1, 9).negotiate(&range(5, 2)), None);
}

#[tokio::test]
async fn handshake_without_a_common_version_fails_on_both_sides() {
    let ((mut hr, mut hw), (mut ar, mut aw)) = connection();
    let future_host = Hello {
        min_version: MAX_PROTOCOL_VERSION + 1,
        max_version: MAX_PROTOCOL_VERSION + 3,
        software: "vc-host 9.0.0".into(),
    };
    let agent_hello = Hello::ours("vc-agent 0.1.0");
    let (host, agent) = tokio::join!(
        handshake_client(&mut hr, &mut hw, &future_host),
        handshake_server(&mut ar, &mut aw, &agent_hello),
    );
    // The agent still answered, so the host can say what the agent speaks.
    match host.expect_err("host side fails") {
        HandshakeError::NoCommonVersion {
            ours_min,
            ours_max,
            peer_min,
            peer_max,
            peer_software,
        } => {
            assert_eq!(
                (ours_min, ours_max),
                (MAX_PROTOCOL_VERSION + 1, MAX_PROTOCOL_VERSION + 3)
            );
            assert_eq!(
                (peer_min, peer_max),
                (MIN_PROTOCOL_VERSION, MAX_PROTOCOL_VERSION)
            );
            assert_eq!(peer_software, "vc-agent 0.1.0");
        }
        other => panic!("host: {other:?}"),
    }
    match agent.expect_err("agent side fails") {
        HandshakeError::NoCommonVersion {
            peer_min,
            peer_max,
            peer_software,
            ..
        } => {
            assert_eq!(
                (peer_min, peer_max),
                (MAX_PROTOCOL_VERSION + 1, MAX_PROTOCOL_VERSION + 3)
            );
            assert_eq!(peer_software, "vc-host 9.0.0");
        }
        other => panic!("agent: {other:?}"),
    }
}

#[tokio::test]
async fn handshake_refuses_a_peer_that_skips_hello() {
    let ((_hr, mut hw), (mut ar, mut aw)) = connection();
    hw.write_message(FrameKind::Request, 1, &Request::Ping)
        .await
        .expect("host sends a request first");
    let err = handshake_server(&mut ar, &mut aw, &Hello::ours("agent"))
        .await
        .expect_err("no hello");
    assert!(
        matches!(
            err,
            HandshakeError::Frame(FrameError::UnexpectedKind {
                expected: FrameKind::Hello,
                got: FrameKind::Request
            })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn handshake_reports_a_peer_that_hangs_up() {
    let ((hr, hw), (mut ar, mut aw)) = connection();
    drop((hr, hw));
    let err = handshake_server(&mut ar, &mut aw, &Hello::ours("agent"))
        .await
        .expect_err("peer gone");
    assert!(
        matches!(&err, HandshakeError::Frame(e) if e.is_clean_eof()),
        "{err:?}"
    );
}

#[tokio::test]
async fn hello_frames_always_use_the_handshake_version() {
    let (client, mut server) = duplex(1024);
    let mut writer = FrameWriter::new(client);
    writer.set_version(MAX_PROTOCOL_VERSION + 1);
    writer
        .write_message(FrameKind::Hello, 0, &Hello::ours("x"))
        .await
        .expect("writes");
    writer
        .write_message(FrameKind::Request, 1, &Request::Ping)
        .await
        .expect("writes");
    drop(writer);
    let mut bytes = Vec::new();
    server.read_to_end(&mut bytes).await.expect("reads");
    assert_eq!(&bytes[..4], &MAGIC);
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), HANDSHAKE_VERSION);
    let hello_len = u32::from_le_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
    let second = &bytes[HEADER_LEN + hello_len..];
    assert_eq!(
        u16::from_le_bytes([second[4], second[5]]),
        MAX_PROTOCOL_VERSION + 1
    );
}
