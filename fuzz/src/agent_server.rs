//! `agent_server`: the agent's side of a connection, the real server
//! (`vc_agent::serve_connection` over an in-process [`Agent`] running as a
//! normal process in a temporary directory), reading the bytes as what the
//! host sent: handshake, request frames, stream attaches, garbage.
//!
//! Requests that would start programs or containers on the machine that
//! runs the fuzzer (`Exec`, `ExecDirect`, `CreateContainer`) are taken out of the bytes
//! before the agent sees them (see [`without_side_effects`]); everything else
//! runs for real. As a normal process the agent's `SetupPod` only writes its
//! files into the temporary directory, and every request about a container
//! or process finds none.
//!
//! Checked: the agent never panics; everything it writes after its `Hello`
//! is a response frame that decodes; each response answers a frame the host
//! sent; and when the host's bytes were a clean sequence of frames, every
//! frame got exactly one answer, except `Wait` and `NextEvent`, which the
//! host's end of stream may cancel.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vc_agent::{Agent, AgentOptions};
use vc_proto::{
    codec, FrameKind, FrameReader, Header, Request, Response, DEFAULT_MAX_PAYLOAD, HEADER_LEN,
};

use crate::frame::round_trip;

/// Size of the in-memory pipe.
const PIPE: usize = 64 * 1024;

/// One frame of the host's bytes, as the agent's reader will cut it.
struct Sent {
    kind: FrameKind,
    id: u64,
    /// `Wait` or `NextEvent`: may go unanswered when the host goes away.
    waits: bool,
}

/// The frames at the start of `data` (cut where the agent's reader would
/// fail at the latest), with the byte length they take.
fn frames(data: &[u8]) -> (Vec<(Header, &[u8])>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = data.get(at..at + HEADER_LEN) {
        let head: &[u8; HEADER_LEN] = head.try_into().expect("HEADER_LEN bytes");
        // Any version: the agent's check is stricter, so it stops no later.
        let Ok(header) = Header::decode(head, 0..=u16::MAX, DEFAULT_MAX_PAYLOAD) else {
            break;
        };
        let end = at + HEADER_LEN + header.length as usize;
        let Some(payload) = data.get(at + HEADER_LEN..end) else {
            break;
        };
        out.push((header, payload));
        at = end;
    }
    (out, at)
}

fn has_side_effects(header: &Header, payload: &[u8]) -> bool {
    header.kind == FrameKind::Request
        && matches!(
            codec::decode::<Request>(payload),
            Ok(Request::Exec { .. } | Request::ExecDirect { .. } | Request::CreateContainer(_))
        )
}

/// `data` without the request frames that would start programs or
/// containers here. The agent reads frames at the same boundaries as
/// [`frames`] up to where either stops, so none of those reaches it.
fn without_side_effects(data: &[u8]) -> Vec<u8> {
    let (frames, used) = frames(data);
    let mut out = Vec::with_capacity(data.len());
    for (header, payload) in frames {
        if !has_side_effects(&header, payload) {
            out.extend_from_slice(&header.encode());
            out.extend_from_slice(payload);
        }
    }
    out.extend_from_slice(&data[used..]);
    out
}

/// What the host sent after its `Hello`, frame by frame; whether the bytes
/// were whole frames to the end.
fn sent(input: &[u8]) -> (Vec<Sent>, bool) {
    let (frames, used) = frames(input);
    let sent = frames
        .iter()
        .skip(1)
        .map(|(header, payload)| Sent {
            kind: header.kind,
            id: header.id,
            waits: header.kind == FrameKind::Request
                && matches!(
                    codec::decode::<Request>(payload),
                    Ok(Request::Wait { .. } | Request::NextEvent)
                ),
        })
        .collect();
    (sent, used == input.len())
}

/// Runs the agent over `input`; returns whether it served the connection
/// without error, and the bytes it wrote.
async fn serve(input: &[u8]) -> (bool, Vec<u8>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let agent = Agent::new(AgentOptions::process(dir.path())).expect("the agent starts");
    let (host, guest) = tokio::io::duplex(PIPE);
    let server = tokio::spawn(vc_agent::serve_connection(Arc::clone(&agent), guest));
    let (mut read, mut write) = tokio::io::split(host);
    let send = async {
        // The agent may stop reading at any point (garbage, a stream attach).
        let _ = write.write_all(input).await;
        let _ = write.shutdown().await;
    };
    let receive = async {
        let mut out = Vec::new();
        let _ = read.read_to_end(&mut out).await;
        out
    };
    let ((), out) = tokio::join!(send, receive);
    let served = match server.await {
        Ok(result) => result.is_ok(),
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    (served, out)
}

pub(crate) fn run(data: &[u8]) {
    answers(data);
}

/// Serves `data` and checks the agent's answers; returns how many it gave.
fn answers(data: &[u8]) -> usize {
    let input = without_side_effects(data);
    let (out_served, out) = crate::block_on("the agent server", serve(&input));

    // What the agent wrote: its Hello, then responses only, each decodable.
    let mut reader = FrameReader::new(out.as_slice());
    let mut answers: HashMap<u64, usize> = HashMap::new();
    let mut first = true;
    loop {
        let frame = match crate::frame::ready(reader.read_frame()) {
            Ok(frame) => frame,
            Err(e) if e.is_clean_eof() => break,
            Err(e) => panic!("the agent wrote a broken frame: {e}"),
        };
        if first {
            assert_eq!(
                frame.header.kind,
                FrameKind::Hello,
                "the agent's first frame"
            );
            first = false;
            continue;
        }
        assert_eq!(
            frame.header.kind,
            FrameKind::Response,
            "the agent sent a non-response"
        );
        let response: Response = frame
            .decode(FrameKind::Response)
            .unwrap_or_else(|e| panic!("the agent sent an undecodable response: {e}"));
        round_trip(&response);
        *answers.entry(frame.header.id).or_default() += 1;
    }

    let (sent, whole) = sent(&input);
    let mut expected: HashMap<u64, (usize, usize)> = HashMap::new();
    for s in &sent {
        let (min, max) = expected.entry(s.id).or_default();
        *max += 1;
        if !s.waits {
            *min += 1;
        }
    }
    for (id, count) in &answers {
        let max = expected.get(id).map_or(0, |e| e.1);
        assert!(
            *count <= max,
            "{count} answers for id {id}, which the host sent {max} times"
        );
    }
    let request_loop = sent
        .first()
        .is_some_and(|s| s.kind != FrameKind::StreamAttach);
    if out_served && whole && request_loop {
        for (id, (min, _)) in &expected {
            let got = answers.get(id).copied().unwrap_or(0);
            assert!(
                got >= *min,
                "id {id} was sent {min} times but answered {got} times"
            );
        }
    }
    answers.values().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        crate::seeds::seed("agent_server", name)
    }

    #[test]
    fn the_seeds_reach_the_request_loop_and_the_stream_attach() {
        // 18 requests and a response frame (refused by id), `CreateContainer`
        // taken out, `NextEvent` cancelled by the end of stream, and `Wait`
        // (of no process) answered or cancelled, whichever comes first.
        let n = answers(&seed("every-request"));
        assert!((16..=17).contains(&n), "{n} answers");
        assert_eq!(answers(&seed("stream-attach")), 1);
        assert_eq!(answers(&seed("pings-then-garbage")), 8);
    }

    #[test]
    fn exec_and_create_never_reach_the_agent() {
        let data = seed("every-request");
        let kept = without_side_effects(&data);
        let (frames, used) = frames(&kept);
        assert_eq!(used, kept.len());
        assert!(frames.iter().all(|(h, p)| !has_side_effects(h, p)));
        assert_eq!(frames.len(), frames_of(&data) - 1);
    }

    fn frames_of(data: &[u8]) -> usize {
        frames(data).0.len()
    }
}
