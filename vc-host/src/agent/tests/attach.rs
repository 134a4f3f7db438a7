//! Process streams over a pluggable dialer: attach, refusal, stdin end-of-file,
//! `collect_output`, a VM that dies while output is awaited, and a
//! version-2 agent, which gets `Exec` and the pipes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use vc_proto::{
    AgentError, ErrorCode, FrameKind, Hello, ProcessRef, ProcessSpec, Request, Response,
    StreamAttach, StreamKind,
};

use super::{pair, pair_with, serve, switch, within, FakeAgent, PIPE};
use crate::agent::{
    collect_output, collect_output_limited, dialer_fn, AgentClient, AgentClientError,
    ConnectOptions, Dialer, RawStream, StreamError,
};
use crate::runtime::Process;

/// Output bytes: NULs included, no final newline, larger than the pipe.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn stdout_bytes() -> Vec<u8> {
    pattern(1 << 20, 0)
}

fn stderr_bytes() -> Vec<u8> {
    pattern(300 * 1024 + 7, 1)
}

fn process(container: &str) -> ProcessRef {
    ProcessRef {
        container_id: container.into(),
        exec_id: Some("e1".into()),
    }
}

/// The agent's side of one stream connection. Container `hang` gets streams
/// that never carry a byte; `Tty` is refused; stdin bytes are counted and
/// reported on `stdin_len` at end-of-file.
async fn stream_side(guest: DuplexStream, stdin_len: mpsc::UnboundedSender<usize>) {
    let mut agent = FakeAgent::accept(guest).await;
    let (_, attach) = agent
        .reader
        .read_message::<StreamAttach>(FrameKind::StreamAttach)
        .await
        .expect("attach frame");
    if attach.stream == StreamKind::Tty {
        let refusal = AgentError::new(ErrorCode::InvalidArgument, "not a terminal process");
        agent.respond(0, &Response::Error(refusal)).await;
        return;
    }
    agent.respond(0, &Response::Ok).await;
    let mut raw = agent.reader.into_inner().unsplit(agent.writer.into_inner());
    if attach.process.container_id == "hang" {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    match attach.stream {
        StreamKind::Stdout => raw.write_all(&stdout_bytes()).await.expect("stdout"),
        StreamKind::Stderr => raw.write_all(&stderr_bytes()).await.expect("stderr"),
        StreamKind::Stdin => {
            let mut got = Vec::new();
            raw.read_to_end(&mut got).await.expect("stdin");
            let _ = stdin_len.send(got.len());
        }
        StreamKind::Tty => unreachable!("refused above"),
    }
    raw.shutdown().await.expect("end of stream");
}

fn fake_dialer() -> (Arc<dyn Dialer>, mpsc::UnboundedReceiver<usize>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let dialer = dialer_fn(move || {
        let (host, guest) = tokio::io::duplex(PIPE);
        tokio::spawn(stream_side(guest, tx.clone()));
        async move { Ok(RawStream::new(host)) }
    });
    (Arc::new(dialer), rx)
}

fn answer_waits(request: Request) -> Option<Response> {
    match request {
        Request::Wait { process } if process.container_id == "hang" => None,
        Request::Wait { .. } => Some(Response::Exited(3)),
        _ => Some(Response::Ok),
    }
}

#[tokio::test]
async fn agent_attach_collect_output_gets_every_byte_and_the_exit_code() {
    let (dialer, _) = fake_dialer();
    let (client, agent) = pair_with(&ConnectOptions::default(), Some(dialer)).await;
    serve(agent, answer_waits);
    let output = within(
        Duration::from_secs(10),
        collect_output(&client, &process("c")),
    )
    .await
    .expect("output");
    assert_eq!(output.exit_code, 3);
    assert!(output.stdout == stdout_bytes(), "stdout differs");
    assert!(output.stderr == stderr_bytes(), "stderr differs");
}

#[tokio::test]
async fn agent_attach_collect_output_stops_at_its_limit() {
    let (dialer, _) = fake_dialer();
    let (client, agent) = pair_with(&ConnectOptions::default(), Some(dialer)).await;
    serve(agent, answer_waits);
    // stdout is 1 MiB: exactly that much is allowed, one byte less is not.
    let output = within(
        Duration::from_secs(10),
        collect_output_limited(&client, &process("c"), stdout_bytes().len()),
    )
    .await
    .expect("output at the limit");
    assert!(output.stdout == stdout_bytes(), "stdout differs");
    let err = within(
        Duration::from_secs(10),
        collect_output_limited(&client, &process("c"), stdout_bytes().len() - 1),
    )
    .await
    .expect_err("output over the limit");
    assert!(
        matches!(
            err,
            AgentClientError::Stream {
                stream: StreamKind::Stdout,
                source: StreamError::TooLarge(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_attach_stdin_shutdown_is_end_of_file() {
    let (dialer, mut stdin_len) = fake_dialer();
    let (client, agent) = pair_with(&ConnectOptions::default(), Some(dialer)).await;
    serve(agent, answer_waits);
    let mut io = client
        .attach_process(&process("c"), false, true)
        .await
        .expect("attach");
    assert!(io.tty.is_none());
    let mut stdin = io.stdin.take().expect("stdin requested");
    let data = pattern(200 * 1024, 9);
    stdin.write_all(&data).await.expect("write");
    stdin.shutdown().await.expect("eof");
    let got = within(Duration::from_secs(5), stdin_len.recv())
        .await
        .expect("count");
    assert_eq!(got, data.len());
    let mut out = Vec::new();
    io.stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .await
        .expect("read");
    assert!(out == stdout_bytes());
}

#[tokio::test]
async fn agent_attach_refusal_is_typed() {
    let (dialer, _) = fake_dialer();
    let (client, _agent) = pair_with(&ConnectOptions::default(), Some(dialer)).await;
    let err = client
        .attach_process(&process("c"), true, false)
        .await
        .expect_err("refused");
    match err {
        AgentClientError::Stream {
            stream: StreamKind::Tty,
            source: StreamError::Refused(e),
            ..
        } => assert_eq!(e.code, ErrorCode::InvalidArgument),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn agent_attach_without_a_dialer() {
    let (client, _agent) = pair().await;
    let err = client
        .attach(&process("c"), StreamKind::Stdout)
        .await
        .expect_err("no dialer");
    assert!(matches!(err, AgentClientError::NoDialer), "{err:?}");
}

#[tokio::test]
async fn agent_attach_dial_failure_is_typed() {
    let dialer = dialer_fn(|| async {
        Err::<RawStream, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let (client, _agent) = pair_with(&ConnectOptions::default(), Some(Arc::new(dialer))).await;
    let err = client
        .attach(&process("c"), StreamKind::Stderr)
        .await
        .expect_err("dial fails");
    assert!(
        matches!(
            err,
            AgentClientError::Stream {
                source: StreamError::Dial(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_attach_collect_output_ends_with_vm_gone_when_the_vm_dies() {
    let (dialer, _) = fake_dialer();
    let (alive, probe) = switch();
    let opts = ConnectOptions::default().vm_alive(probe);
    let (client, agent) = pair_with(&opts, Some(dialer)).await;
    let _fake = serve(agent, answer_waits);
    let collecting = tokio::spawn({
        let client = client.clone();
        async move { collect_output(&client, &process("hang")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alive.store(false, Ordering::SeqCst);
    let killed = Instant::now();
    let err = within(Duration::from_secs(2), collecting)
        .await
        .expect("join")
        .expect_err("vm gone");
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, AgentClientError::VmGone { .. }), "{err:?}");
    assert_eq!(err.exit_code(), Some(vc_proto::EXIT_CODE_VM_GONE));
    // Attaching to a dead VM fails at once.
    let err = client
        .attach(&process("c"), StreamKind::Stdout)
        .await
        .expect_err("gone");
    assert!(
        matches!(err, AgentClientError::VmGone { during: "attach" }),
        "{err:?}"
    );
}

/// A host of protocol 3 and an agent of protocol 2 settle on 2:
/// `Process::spawn` then sends `Exec` (never a park, which the stream side
/// here would not read, nor `ExecDirect`) and reads every byte through
/// streams attached afterwards.
#[tokio::test]
async fn a_version_2_agent_gets_exec_and_the_pipes() {
    let (dialer, _) = fake_dialer();
    let (host, guest) = tokio::io::duplex(PIPE);
    let old = Hello {
        min_version: 2,
        max_version: 2,
        software: "old agent".into(),
    };
    let opts = ConnectOptions::default();
    let (client, agent) = tokio::join!(
        AgentClient::from_stream_with(host, &opts, Some(dialer)),
        FakeAgent::accept_as(guest, &old)
    );
    let client = client.expect("client handshake");
    assert_eq!(client.protocol_version(), 2);
    assert!(!client.direct_streams());
    let (seen, mut requests) = mpsc::unbounded_channel();
    serve(agent, move |request| {
        let _ = seen.send(request.name());
        match request {
            Request::Exec { .. } => Some(Response::Pid(7)),
            other => answer_waits(other),
        }
    });
    let spec = ProcessSpec {
        args: vec!["prog".into()],
        ..ProcessSpec::default()
    };
    let p = within(
        Duration::from_secs(10),
        Process::spawn(&client, process("c"), spec, false),
    )
    .await
    .expect("spawned");
    let output = within(Duration::from_secs(10), p.output())
        .await
        .expect("output");
    assert_eq!(output.exit_code, 3);
    assert!(output.stdout == stdout_bytes(), "stdout differs");
    assert!(output.stderr == stderr_bytes(), "stderr differs");
    drop(client);
    let mut names = Vec::new();
    while let Some(name) = requests.recv().await {
        names.push(name);
    }
    assert_eq!(names, ["exec", "close-stdin", "wait"]);
}
