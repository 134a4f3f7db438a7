//! What an untrusted guest may send on the control connection: oversized,
//! malformed and unexpected frames, and plain garbage. None of it may panic
//! the host or leave a call hanging; each becomes a typed error.

use std::time::Duration;

use vc_proto::{FrameError, FrameKind, Header, Hello, Response, HEADER_LEN};

use super::{pair, within};
use crate::agent::{AgentClientError, LinkDown};

fn header(kind: FrameKind, id: u64, length: u32) -> [u8; HEADER_LEN] {
    Header {
        version: vc_proto::PROTOCOL_VERSION,
        kind,
        id,
        length,
    }
    .encode()
}

/// Sends a ping, answers it with `bytes`, and returns the ping's error.
async fn ping_against(bytes: Vec<u8>) -> AgentClientError {
    let (client, mut agent) = pair().await;
    let (result, _agent) = tokio::join!(client.ping(), async move {
        agent.next_request().await.expect("request");
        agent.raw(&bytes).await;
        // Keep the connection open: the failure must come from the bytes.
        agent
    });
    within(Duration::from_secs(1), async { result })
        .await
        .expect_err("misbehaving agent")
}

fn protocol_cause(err: &AgentClientError) -> &FrameError {
    match err {
        AgentClientError::ConnectionLost {
            cause: LinkDown::Protocol(e),
            ..
        } => e,
        other => panic!("expected a protocol violation, got {other:?}"),
    }
}

#[tokio::test]
async fn agent_hostile_oversized_frame_is_refused_before_allocation() {
    let err = ping_against(header(FrameKind::Response, 1, u32::MAX).to_vec()).await;
    assert!(
        matches!(
            protocol_cause(&err),
            FrameError::Oversized {
                length: u32::MAX,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_hostile_bad_magic_ends_the_connection() {
    let err = ping_against(b"HTTP/1.1 200 OK\r\n\r\nhello".to_vec()).await;
    assert!(
        matches!(protocol_cause(&err), FrameError::BadMagic(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_hostile_unknown_kind_and_version() {
    let mut bytes = header(FrameKind::Response, 1, 0);
    bytes[6] = 99;
    let err = ping_against(bytes.to_vec()).await;
    assert!(
        matches!(protocol_cause(&err), FrameError::UnknownKind(99)),
        "{err:?}"
    );

    let mut bytes = header(FrameKind::Response, 1, 0);
    bytes[4] = 0x77;
    let err = ping_against(bytes.to_vec()).await;
    assert!(
        matches!(protocol_cause(&err), FrameError::UnsupportedVersion { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_hostile_truncated_frame_is_a_read_error() {
    let (client, mut agent) = pair().await;
    let (result, _) = tokio::join!(client.ping(), async move {
        let (id, _) = agent.next_request().await.expect("request");
        let mut bytes = header(FrameKind::Response, id, 100).to_vec();
        bytes.extend_from_slice(&[0; 10]);
        agent.raw(&bytes).await;
        drop(agent);
    });
    let err = result.expect_err("truncated");
    assert!(
        matches!(
            err,
            AgentClientError::ConnectionLost {
                cause: LinkDown::Read(ref e),
                ..
            } if matches!(**e, FrameError::Truncated { .. })
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_hostile_undecodable_payload_fails_only_its_call() {
    let (client, mut agent) = pair().await;
    let (result, mut agent) = tokio::join!(client.ping(), async move {
        let (id, _) = agent.next_request().await.expect("request");
        let mut bytes = header(FrameKind::Response, id, 4).to_vec();
        // Variant 200 of Response does not exist.
        bytes.extend_from_slice(&[200, 0, 0, 0]);
        agent.raw(&bytes).await;
        agent
    });
    let err = result.expect_err("bad payload");
    assert!(
        matches!(
            err,
            AgentClientError::BadResponse {
                request: "ping",
                ..
            }
        ),
        "{err:?}"
    );
    let (ok, _) = tokio::join!(client.ping(), async {
        let (id, _) = agent.next_request().await.expect("request");
        agent.respond(id, &Response::Ok).await;
    });
    ok.expect("the frame boundary held, the connection is usable");
}

#[tokio::test]
async fn agent_hostile_unknown_ids_and_unexpected_kinds_are_dropped() {
    let (client, mut agent) = pair().await;
    let (ok, _) = tokio::join!(client.ping(), async {
        let (id, _) = agent.next_request().await.expect("request");
        agent.respond(id + 1000, &Response::Pid(1)).await;
        agent.respond(0, &Response::Ok).await;
        agent
            .writer
            .write_message(FrameKind::Hello, id, &Hello::ours("again"))
            .await
            .expect("hello");
        agent
            .writer
            .write_message(FrameKind::Request, id, &vc_proto::Request::Ping)
            .await
            .expect("request frame");
        agent.respond(id, &Response::Ok).await;
    });
    ok.expect("the real answer still arrives");
}

/// A small deterministic generator, so that failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test]
async fn agent_hostile_random_garbage_never_panics_or_hangs() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let len = (rng.next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Half of the rounds start with a valid header prefix so that the
        // garbage reaches the payload decoder too.
        if round % 2 == 0 {
            let mut h = header(FrameKind::Response, 1, (len as u32).min(64));
            h[8..16].copy_from_slice(&(rng.next() % 3).to_le_bytes());
            bytes.splice(0..0, h);
        }
        let (client, mut agent) = pair().await;
        let (result, _) = within(
            Duration::from_secs(2),
            futures::future::join(client.ping(), async move {
                agent.next_request().await.expect("request");
                agent.raw(&bytes).await;
                drop(agent);
            }),
        )
        .await;
        // Whatever the bytes were, the call ends (with an error, unless they
        // happened to hold a valid answer), and so does the next one.
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
        let next = within(Duration::from_secs(2), client.ping()).await;
        assert!(next.is_err(), "round {round}: the agent is gone");
    }
}
