//! `agent_client`: the host's agent client (`vc_host::agent`) reading the
//! bytes as everything a guest sends it: the agent's side of the control
//! connection (its `Hello`, then responses and events), and of two more
//! connections the client dials for a process's stdout and stderr (a
//! `Hello`, the answer to the stream attach, then raw output).
//!
//! Input layout: a little-endian `u16` length and that many bytes for the
//! control connection, the same for the first dialed connection, and the
//! rest for the second. Missing parts are empty.
//!
//! The client makes one call of each kind that returns data from the guest
//! (ids 1 to 11 in this order: ping, guest details, health, start, stop,
//! state, stats, wait, next event, interfaces, routes) and collects the
//! output of a process (its wait is id 12), all at once, the way the runtime
//! uses it. Checked: no panic and no hang (time is virtual, so the call
//! timeouts fire at once when nothing else can happen); collected output
//! stays within its limit; every error has a message; events become pod
//! events that serialize.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use vc_host::agent::{
    collect_output_limited, dialer_fn, AgentClient, AgentClientError, ConnectOptions, RawStream,
};
use vc_proto::ProcessRef;

/// Size of each in-memory pipe.
const PIPE: usize = 64 * 1024;

/// Most bytes of each output stream kept.
pub(crate) const OUTPUT_LIMIT: usize = 4096;

/// Size of the pieces the control connection's bytes are sent in.
const CHUNK: usize = 256;

/// Splits the input into the control connection's bytes and the dialed
/// connections' bytes.
pub(crate) fn split(data: &[u8]) -> (Vec<u8>, VecDeque<Vec<u8>>) {
    fn part(data: &mut &[u8]) -> Vec<u8> {
        let len = match data {
            [a, b, rest @ ..] => {
                let len = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
                *data = rest;
                len
            }
            _ => data.len(),
        };
        let (head, tail) = data.split_at(len);
        *data = tail;
        head.to_vec()
    }
    let mut data = data;
    let control = part(&mut data);
    let first = part(&mut data);
    (control, VecDeque::from([first, data.to_vec()]))
}

/// The inverse of [`split`], for seeds.
pub(crate) fn join(control: &[u8], first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in [control, first] {
        let len = u16::try_from(part.len()).expect("a seed part fits a u16 length");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(second);
    out
}

/// The guest's end of one connection: sends `bytes` in pieces of `chunk`
/// bytes a millisecond apart (virtual time: whatever the host can do
/// meanwhile, it does, such as attaching streams and sending the next
/// request), closes its side, and reads whatever the host writes until the
/// host closes.
async fn guest_end(stream: DuplexStream, bytes: Vec<u8>, chunk: usize) {
    let (mut read, mut write) = tokio::io::split(stream);
    for piece in bytes.chunks(chunk) {
        if write.write_all(piece).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = write.shutdown().await;
    let mut buf = [0u8; 4096];
    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
}

fn check_error(e: &AgentClientError) {
    assert!(!e.to_string().is_empty());
    let _ = e.exit_code();
    let _ = e.agent_gone();
}

/// Checks a call's outcome; whether it succeeded.
fn check<T>(result: &Result<T, AgentClientError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            check_error(e);
            false
        }
    }
}

/// What one input achieved: how many of the 11 calls succeeded, and the
/// collected output when that succeeded.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) calls_ok: usize,
    pub(crate) output: Option<vc_host::agent::Output>,
}

async fn exercise(control: Vec<u8>, streams: VecDeque<Vec<u8>>) -> Outcome {
    let (host, guest) = tokio::io::duplex(PIPE);
    tokio::spawn(guest_end(guest, control, CHUNK));
    let streams = Arc::new(Mutex::new(streams));
    let dialer = dialer_fn(move || {
        let next = streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        async move {
            let bytes = next.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "no more streams")
            })?;
            let (host, guest) = tokio::io::duplex(PIPE);
            // The host closes a stream connection when done with it.
            tokio::spawn(guest_end(guest, bytes, usize::MAX));
            Ok(RawStream::new(host))
        }
    });
    let opts = ConnectOptions::default().call_timeout(Duration::from_secs(1));
    let client = match AgentClient::from_stream_with(host, &opts, Some(Arc::new(dialer))).await {
        Ok(client) => client,
        Err(e) => {
            check_error(&e);
            return Outcome::default();
        }
    };
    let _ = format!("{client:?}");
    let process = ProcessRef {
        container_id: "c".to_owned(),
        exec_id: None,
    };
    let (ping, details, health, start, stop, state, stats, wait, event, interfaces, routes, output) = tokio::join!(
        client.ping(),
        client.guest_details(),
        client.health(),
        client.start_container("c"),
        client.stop_container("c", Duration::from_secs(1)),
        client.container_state("c"),
        client.stats("c"),
        client.wait(&process),
        client.next_event(),
        client.list_interfaces(),
        client.list_routes(),
        collect_output_limited(&client, &process, OUTPUT_LIMIT),
    );
    let mut calls_ok = [
        check(&ping),
        check(&details),
        check(&health),
        check(&start),
        check(&stop),
        check(&state),
        check(&stats),
        check(&wait),
        check(&interfaces),
        check(&routes),
    ]
    .into_iter()
    .filter(|ok| *ok)
    .count();
    if let Ok(event) = &event {
        calls_ok += 1;
        if let Some(event) = vc_host::fuzzing::pod_event(event.clone()) {
            serde_json::to_string(&event).expect("a pod event serializes");
        }
    }
    check(&event);
    let output = match output {
        Ok(output) => Some(output),
        Err(e) => {
            check_error(&e);
            None
        }
    };
    Outcome { calls_ok, output }
}

pub(crate) fn outcome(data: &[u8]) -> Outcome {
    let (control, streams) = split(data);
    crate::block_on_paused("the agent client", exercise(control, streams))
}

pub(crate) fn run(data: &[u8]) {
    let out = outcome(data);
    assert!(out.calls_ok <= 11);
    if let Some(output) = out.output {
        assert!(output.stdout.len() <= OUTPUT_LIMIT, "stdout past the limit");
        assert!(output.stderr.len() <= OUTPUT_LIMIT, "stderr past the limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        crate::seeds::seed("agent_client", name)
    }

    #[test]
    fn the_seeds_reach_every_answer() {
        let out = outcome(&seed("every-answer"));
        assert_eq!(out.calls_ok, 11, "{out:?}");
        let output = out.output.expect("the output is collected");
        assert_eq!(output.stdout, b"hello\n");
        assert_eq!(output.stderr, b"oops\n");
        assert_eq!(output.exit_code, 0);

        let out = outcome(&seed("errors"));
        assert_eq!(out.calls_ok, 0, "{out:?}");
        assert!(out.output.is_none());
    }

    #[test]
    fn output_beyond_the_limit_is_refused() {
        let mut data = seed("every-answer");
        data.extend(std::iter::repeat_n(b'x', OUTPUT_LIMIT));
        let out = outcome(&data);
        assert_eq!(out.calls_ok, 11, "{out:?}");
        assert!(out.output.is_none(), "stderr is past the limit");
    }
}
