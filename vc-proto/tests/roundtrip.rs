//! Every message round-trips through the codec and through a `FrameWriter` ->
//! `FrameReader` pair over `tokio::io::duplex`, and a few encodings are pinned
//! byte for byte so that an accidental wire change fails here.

mod common;

use std::collections::BTreeSet;
use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::duplex;
use vc_proto::{
    codec, ErrorCode, FrameKind, FrameReader, FrameWriter, Hello, Request, Response, StreamAttach,
    StreamKind, HEADER_LEN,
};

fn codec_roundtrip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) {
    let bytes = codec::encode(value).expect("encodes");
    let back: T = codec::decode(&bytes).expect("decodes");
    assert_eq!(&back, value);
}

/// Writes every value as a frame of `kind` from one task while this one reads
/// them back, over a duplex pipe much smaller than most frames, so that both
/// sides see partial reads and writes.
async fn frame_roundtrip<T>(kind: FrameKind, values: Vec<T>)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug + Clone + Send + Sync + 'static,
{
    let (client, server) = duplex(64);
    let sent = values.clone();
    let writer = tokio::spawn(async move {
        let mut writer = FrameWriter::new(client);
        for (i, value) in sent.iter().enumerate() {
            let id = if kind == FrameKind::Hello || kind == FrameKind::StreamAttach {
                0
            } else {
                i as u64 * 1_000_003 + 1
            };
            writer
                .write_message(kind, id, value)
                .await
                .expect("writes a frame");
        }
    });
    let mut reader = FrameReader::new(server);
    for (i, value) in values.iter().enumerate() {
        let frame = reader.read_frame().await.expect("reads a frame");
        assert_eq!(frame.header.kind, kind);
        let version = if kind == FrameKind::Hello {
            vc_proto::frame::HANDSHAKE_VERSION
        } else {
            vc_proto::PROTOCOL_VERSION
        };
        assert_eq!(frame.header.version, version);
        assert_eq!(frame.header.length as usize, frame.payload.len());
        if kind != FrameKind::Hello && kind != FrameKind::StreamAttach {
            assert_eq!(frame.header.id, i as u64 * 1_000_003 + 1);
        }
        let back: T = frame.decode(kind).expect("decodes");
        assert_eq!(&back, value);
    }
    writer.await.expect("writer task");
    let end = reader
        .read_frame()
        .await
        .expect_err("the writer closed the pipe");
    assert!(end.is_clean_eof(), "{end:?}");
}

#[test]
fn samples_cover_every_request_variant() {
    let seen: BTreeSet<usize> = common::requests()
        .iter()
        .map(common::request_index)
        .collect();
    assert_eq!(seen, (0..common::REQUEST_VARIANTS).collect());
}

#[test]
fn samples_cover_every_response_variant() {
    let seen: BTreeSet<usize> = common::responses()
        .iter()
        .map(common::response_index)
        .collect();
    assert_eq!(seen, (0..common::RESPONSE_VARIANTS).collect());
}

#[test]
fn samples_cover_every_error_code_and_stream_kind() {
    // Exhaustive matches: a new variant fails to compile until the samples know it.
    let codes: BTreeSet<u8> = common::error_codes()
        .iter()
        .map(|code| match code {
            ErrorCode::Unsupported => 0,
            ErrorCode::InvalidArgument => 1,
            ErrorCode::NotFound => 2,
            ErrorCode::AlreadyExists => 3,
            ErrorCode::WrongState => 4,
            ErrorCode::ExecFailed => 5,
            ErrorCode::System => 6,
            ErrorCode::Internal => 7,
        })
        .collect();
    assert_eq!(codes, (0..8).collect());
    let streams: BTreeSet<u8> = common::stream_attaches()
        .iter()
        .map(|attach| match attach.stream {
            StreamKind::Stdin => 0,
            StreamKind::Stdout => 1,
            StreamKind::Stderr => 2,
            StreamKind::Tty => 3,
        })
        .collect();
    assert_eq!(streams, (0..4).collect());
}

#[test]
fn the_largest_pids_reply_fits_one_frame_and_the_decode_budget() {
    // The largest pids, each five bytes: the worst case of the bound.
    let pids: Vec<u32> = (0..vc_proto::MAX_CONTAINER_PIDS as u32)
        .map(|i| u32::MAX - i)
        .collect();
    let bytes = codec::encode(&Response::Pids(pids.clone())).expect("encodes");
    assert!(
        bytes.len() <= vc_proto::DEFAULT_MAX_PAYLOAD as usize,
        "{} bytes",
        bytes.len()
    );
    assert_eq!(
        codec::decode::<Response>(&bytes).expect("decodes"),
        Response::Pids(pids)
    );
}

#[test]
fn request_names_are_distinct() {
    let names: BTreeSet<&str> = common::requests().iter().map(Request::name).collect();
    assert_eq!(names.len(), common::REQUEST_VARIANTS);
}

#[test]
fn every_request_roundtrips_through_the_codec() {
    for request in common::requests() {
        codec_roundtrip(&request);
    }
}

#[test]
fn every_response_roundtrips_through_the_codec() {
    for response in common::responses() {
        codec_roundtrip(&response);
    }
}

#[test]
fn nested_types_roundtrip_through_the_codec() {
    codec_roundtrip(&common::pod_setup());
    codec_roundtrip(&common::container_spec());
    codec_roundtrip(&common::process_spec());
    codec_roundtrip(&common::interface());
    codec_roundtrip(&common::routes());
    for event in common::events() {
        codec_roundtrip(&event);
    }
    for attach in common::stream_attaches() {
        codec_roundtrip(&attach);
    }
    codec_roundtrip(&Hello::ours("vc-agent 0.1.0"));
    codec_roundtrip(&Hello {
        min_version: 0,
        max_version: u16::MAX,
        software: String::new(),
    });
}

#[tokio::test]
async fn every_request_roundtrips_through_frames() {
    frame_roundtrip(FrameKind::Request, common::requests()).await;
}

#[tokio::test]
async fn every_response_roundtrips_through_frames() {
    frame_roundtrip(FrameKind::Response, common::responses()).await;
}

#[tokio::test]
async fn stream_attach_and_hello_roundtrip_through_frames() {
    frame_roundtrip(FrameKind::StreamAttach, common::stream_attaches()).await;
    frame_roundtrip(
        FrameKind::Hello,
        vec![Hello::ours("vc-host 0.1.0"), Hello::ours("vc-agent 0.1.0")],
    )
    .await;
}

#[tokio::test]
async fn requests_and_responses_interleave_on_one_connection() {
    // A request/response exchange both ways over one duplex pair, with ids
    // echoed and answers sent in reverse order.
    let (host, agent) = duplex(256);
    let (host_read, host_write) = tokio::io::split(host);
    let (agent_read, agent_write) = tokio::io::split(agent);
    let agent_task = tokio::spawn(async move {
        let mut reader = FrameReader::new(agent_read);
        let mut writer = FrameWriter::new(agent_write);
        let mut got = Vec::new();
        for _ in 0..3 {
            let (id, request) = reader
                .read_message::<Request>(FrameKind::Request)
                .await
                .expect("agent reads a request");
            got.push((id, request));
        }
        for (id, request) in got.into_iter().rev() {
            let reply = match request {
                Request::Ping => Response::Ok,
                Request::StartContainer { .. } => Response::Pid(id as u32),
                _ => Response::Exited(7),
            };
            writer
                .write_message(FrameKind::Response, id, &reply)
                .await
                .expect("agent answers");
        }
    });
    let mut reader = FrameReader::new(host_read);
    let mut writer = FrameWriter::new(host_write);
    let requests = [
        (10, Request::Ping),
        (
            11,
            Request::StartContainer {
                container_id: "c1".into(),
            },
        ),
        (
            12,
            Request::Wait {
                process: common::main_process(),
            },
        ),
    ];
    for (id, request) in &requests {
        writer
            .write_message(FrameKind::Request, *id, request)
            .await
            .expect("host sends");
    }
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            reader
                .read_message::<Response>(FrameKind::Response)
                .await
                .expect("host reads an answer"),
        );
    }
    agent_task.await.expect("agent task");
    assert_eq!(
        answers,
        vec![
            (12, Response::Exited(7)),
            (11, Response::Pid(11)),
            (10, Response::Ok)
        ]
    );
}

#[tokio::test]
async fn frame_bytes_are_header_then_payload() {
    let (client, mut server) = duplex(1024);
    let mut writer = FrameWriter::new(client);
    writer
        .write_message(FrameKind::Request, 0x0102, &Request::Ping)
        .await
        .expect("writes");
    drop(writer);
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut server, &mut bytes)
        .await
        .expect("reads");
    assert_eq!(
        bytes,
        [
            b'v', b'c', b'p', b'!', // magic
            3, 0, // version
            2, // kind: Request
            0, // flags
            2, 1, 0, 0, 0, 0, 0, 0, // request id
            1, 0, 0, 0, // payload length
            0, // payload: variant 0, Ping
        ]
    );
    assert_eq!(bytes.len(), HEADER_LEN + 1);
}

#[test]
fn payload_encodings_are_pinned() {
    // These bytes are the wire format of protocol version 2: if one changes, a
    // peer built from an older commit can no longer talk to this one.
    let pinned: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (codec::encode(&Request::Ping).expect("encodes"), vec![0]),
        (
            codec::encode(&Request::StartContainer {
                container_id: "c1".into(),
            })
            .expect("encodes"),
            vec![5, 2, b'c', b'1'],
        ),
        (
            codec::encode(&Request::StopContainer {
                container_id: "c".into(),
                grace_ms: 300,
            })
            .expect("encodes"),
            // 300 does not fit one varint byte: 251 then a u16 LE.
            vec![6, 1, b'c', 251, 0x2c, 0x01],
        ),
        (
            codec::encode(&Request::Signal {
                process: common::exec_process(),
                signal: 9,
                all: false,
            })
            .expect("encodes"),
            // signal 9 is zigzag-encoded as 18.
            vec![
                12, 2, b'c', b'1', 1, 6, b'e', b'x', b'e', b'c', b'-', b'7', 18, 0,
            ],
        ),
        (
            codec::encode(&Response::Exited(-1)).expect("encodes"),
            vec![5, 1],
        ),
        (
            codec::encode(&Response::Routes(vec![common::routes()[0].clone()])).expect("encodes"),
            vec![
                10, 1, // variant, one route
                0, // destination None
                1, 0, 192, 0, 2, 1, // gateway Some(V4 192.0.2.1)
                1, 0x02, 0x42, 0xc0, 0x00, 0x02, 0x0a, // device_mac
                1, 0, 192, 0, 2, 10, // source
                1, 100, // metric
            ],
        ),
        (
            codec::encode(&StreamAttach {
                process: common::main_process(),
                stream: StreamKind::Stderr,
            })
            .expect("encodes"),
            vec![2, b'c', b'1', 0, 2],
        ),
        (
            codec::encode(&Request::CreateContainerV2 {
                spec: common::container_spec(),
                seccomp: vc_proto::Seccomp::Unconfined,
            })
            .expect("encodes"),
            {
                // Appended variant 22: the spec exactly as in CreateContainer
                // (variant 4), then the seccomp choice (1 = Unconfined).
                let mut v = vec![22];
                v.extend(
                    &codec::encode(&Request::CreateContainer(common::container_spec()))
                        .expect("encodes")[1..],
                );
                v.push(1);
                v
            },
        ),
        (
            codec::encode(&Request::ContainerPids {
                container_id: "c1".into(),
            })
            .expect("encodes"),
            vec![23, 2, b'c', b'1'],
        ),
        (
            // Appended variant 11; 300 takes three bytes (251 = u16 follows).
            codec::encode(&Response::Pids(vec![1, 300])).expect("encodes"),
            vec![11, 2, 1, 251, 0x2c, 0x01],
        ),
        (
            codec::encode(&vc_proto::Seccomp::Profile(vc_proto::SeccompProfile {
                default_action: vc_proto::SeccompAction::Errno,
                default_errno_ret: Some(1),
                architectures: vec![],
                flags: vec![vc_proto::SeccompFlag::Log],
                syscalls: vec![vc_proto::SeccompSyscall {
                    names: vec!["mkdir".into()],
                    action: vc_proto::SeccompAction::Allow,
                    errno_ret: None,
                    args: vec![vc_proto::SeccompArg {
                        index: 1,
                        value: 0o700,
                        value_two: 0,
                        op: vc_proto::SeccompOp::MaskedEqual,
                    }],
                }],
            }))
            .expect("encodes"),
            vec![
                2, // Seccomp::Profile
                4, 1, 1, // defaultAction Errno, defaultErrnoRet Some(1)
                0, // no architectures
                1, 1, // flags: [Log]
                1, // one rule
                1, 5, b'm', b'k', b'd', b'i', b'r', // names: ["mkdir"]
                6, 0, // action Allow, errnoRet None
                1, 1, 251, 0xc0, 0x01, 0,
                6, // args: index 1, value 448, valueTwo 0, MaskedEqual
            ],
        ),
        (
            codec::encode(&Hello {
                min_version: 1,
                max_version: 1,
                software: "a".into(),
            })
            .expect("encodes"),
            vec![1, 1, 1, b'a'],
        ),
    ];
    for (got, want) in pinned {
        assert_eq!(got, want);
    }
}
