//! Direct output streams (protocol version 3) against the real agent running
//! as a normal process: stream connections are unix socket pairs, so the
//! agent hands real sockets to real child processes, as it hands vsock
//! sockets in the guest. Exact bytes and separation, end of output at exit,
//! stdin through the pipe beside direct output, an unclaimed park closed
//! after its timeout, and the refusals (version 2, no socket, a direct
//! stream attached, a terminal).

mod common;

use std::sync::Arc;

use common::{agent, connect, host_process, read_all, Client};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;
use vc_agent::Agent;
use vc_proto::{
    handshake_client, AgentError, ErrorCode, FrameKind, FrameReader, FrameWriter, Hello,
    ProcessRef, ProcessSpec, Request, Response, StreamKind, StreamPark,
};

/// Parks `ours` of a connection pair as `stream` of `process`; `ours`,
/// carrying the process's bytes after the `Ok`.
async fn park<S: vc_agent::Connection>(
    agent: &Arc<Agent>,
    pair: (S, S),
    process: &ProcessRef,
    stream: StreamKind,
    timeout_ms: u32,
) -> Result<S, AgentError> {
    let park = StreamPark {
        process: process.clone(),
        stream,
        timeout_ms,
    };
    common::open_stream(agent, pair, FrameKind::StreamPark, &park).await
}

async fn park_socket(
    agent: &Arc<Agent>,
    process: &ProcessRef,
    stream: StreamKind,
    timeout_ms: u32,
) -> Result<UnixStream, AgentError> {
    let pair = UnixStream::pair().expect("socket pair");
    park(agent, pair, process, stream, timeout_ms).await
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    }
}

async fn exec_direct(client: &mut Client, exec_id: &str, spec: ProcessSpec) -> Response {
    client
        .call(Request::ExecDirect {
            process: host_process(exec_id),
            spec,
            streams: vec![StreamKind::Stdout, StreamKind::Stderr],
        })
        .await
}

/// Parks stdout and stderr of `exec_id`, then starts `script` with them.
async fn start(
    agent: &Arc<Agent>,
    client: &mut Client,
    exec_id: &str,
    script: &str,
) -> (UnixStream, UnixStream) {
    let process = host_process(exec_id);
    let stdout = park_socket(agent, &process, StreamKind::Stdout, 30_000)
        .await
        .expect("stdout parked");
    let stderr = park_socket(agent, &process, StreamKind::Stderr, 30_000)
        .await
        .expect("stderr parked");
    let started = exec_direct(client, exec_id, sh(script)).await;
    assert!(matches!(started, Response::Pid(_)), "{started:?}");
    (stdout, stderr)
}

fn numbers(prefix: &str, n: u32) -> String {
    (1..=n).map(|i| format!("{prefix}{i}\n")).collect()
}

#[tokio::test]
async fn exact_bytes_kept_apart_and_ended_at_exit() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert_eq!(agent.parked_streams(), 0);
    // Interleaved writes to both, 1.7 MB in all, more than any socket buffer.
    let (stdout, stderr) = start(
        &agent,
        &mut client,
        "big",
        "i=1; while [ $i -le 20000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; \
         head -c 1000000 /dev/zero",
    )
    .await;
    assert_eq!(agent.parked_streams(), 0, "claimed by the exec");
    let (out, err) = tokio::join!(read_all(stdout), read_all(stderr));
    let mut expected = numbers("out", 20000).into_bytes();
    expected.extend(std::iter::repeat_n(0u8, 1_000_000));
    assert_eq!(out.len(), expected.len());
    assert!(out == expected, "stdout differs");
    assert_eq!(String::from_utf8(err).expect("text"), numbers("err", 20000));
    assert_eq!(client.wait("big").await, 0);

    // A process that exits the moment it wrote: its last bytes, then the end.
    let (stdout, stderr) = start(&agent, &mut client, "quick", "printf last; exit 7").await;
    assert_eq!(read_all(stdout).await, b"last");
    assert_eq!(read_all(stderr).await, b"");
    assert_eq!(client.wait("quick").await, 7);

    // There is nothing left to attach: the streams went to the process.
    let refused = common::attach(&agent, host_process("quick"), StreamKind::Stdout)
        .await
        .expect_err("a direct stream cannot be attached");
    assert_eq!(refused.code, ErrorCode::WrongState, "{refused:?}");
}

#[tokio::test]
async fn stdin_goes_through_the_pipe_beside_direct_output() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let (stdout, stderr) = start(&agent, &mut client, "cat", "cat; echo done >&2").await;
    let mut stdin = common::attach(&agent, host_process("cat"), StreamKind::Stdin)
        .await
        .expect("stdin attached");
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let writing = async {
        stdin.write_all(&input).await.expect("stdin written");
        stdin.shutdown().await.expect("end of file");
    };
    let ((), out, err) = tokio::join!(writing, read_all(stdout), read_all(stderr));
    assert!(out == input, "stdout differs from stdin");
    assert_eq!(err, b"done\n");
    assert_eq!(client.wait("cat").await, 0);
}

#[tokio::test]
async fn an_unclaimed_park_is_closed_after_its_timeout() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let process = host_process("never");
    let parked = park_socket(&agent, &process, StreamKind::Stdout, 300)
        .await
        .expect("parked");
    assert_eq!(agent.parked_streams(), 1);
    // A second park of the same stream is refused while the first waits.
    let twice = park_socket(&agent, &process, StreamKind::Stdout, 300)
        .await
        .expect_err("parked twice");
    assert_eq!(twice.code, ErrorCode::AlreadyExists);
    // The agent closes it: end of stream with no byte.
    assert_eq!(read_all(parked).await, b"");
    assert_eq!(agent.parked_streams(), 0);
    let late = exec_direct(&mut client, "never", sh("echo never")).await;
    match late {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::NotFound, "{e:?}"),
        other => panic!("an exec of an expired park answered {other:?}"),
    }
}

#[tokio::test]
async fn refusals() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let process = host_process("p");
    for stream in [StreamKind::Stdin, StreamKind::Tty] {
        let refused = park_socket(&agent, &process, stream, 1000)
            .await
            .expect_err("only output streams park");
        assert_eq!(refused.code, ErrorCode::InvalidArgument, "{refused:?}");
    }
    // An in-memory connection has no socket to hand over.
    let pair = tokio::io::duplex(4096);
    let refused = park(&agent, pair, &process, StreamKind::Stdout, 1000)
        .await
        .expect_err("no socket");
    assert_eq!(refused.code, ErrorCode::Unsupported, "{refused:?}");
    // A terminal has no separate output streams.
    let terminal = ProcessSpec {
        terminal: true,
        ..sh("true")
    };
    match exec_direct(&mut client, "t", terminal).await {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}"),
        other => panic!("a terminal exec-direct answered {other:?}"),
    }
    // A process that exists already cannot get parked streams.
    assert!(matches!(
        client.exec("running", &["sleep", "30"], false).await,
        Response::Pid(_)
    ));
    let exists = park_socket(&agent, &host_process("running"), StreamKind::Stdout, 1000)
        .await
        .expect_err("the process exists");
    assert_eq!(exists.code, ErrorCode::AlreadyExists, "{exists:?}");
    assert_eq!(agent.parked_streams(), 0);
    let killed = client
        .call(Request::Signal {
            process: host_process("running"),
            signal: libc::SIGKILL,
            all: false,
        })
        .await;
    assert_eq!(killed, Response::Ok);
    assert_eq!(client.wait("running").await, 128 + libc::SIGKILL);
}

#[tokio::test]
async fn version_2_connections_have_no_direct_exec() {
    let (agent, _dir) = agent();
    let (ours, theirs) = tokio::io::duplex(common::BUFFER);
    tokio::spawn(vc_agent::serve_connection(Arc::clone(&agent), theirs));
    let (read, write) = tokio::io::split(ours);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let old = Hello {
        min_version: 2,
        max_version: 2,
        software: "old host".into(),
    };
    let negotiated = handshake_client(&mut reader, &mut writer, &old)
        .await
        .expect("handshake");
    assert_eq!(negotiated.version, 2);
    let request = Request::ExecDirect {
        process: host_process("e"),
        spec: sh("true"),
        streams: vec![StreamKind::Stdout],
    };
    writer
        .write_message(FrameKind::Request, 1, &request)
        .await
        .expect("sent");
    let (id, response) = reader
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("answered");
    assert_eq!(id, 1);
    match response {
        Response::Error(e) => assert_eq!(e.code, ErrorCode::Unsupported, "{e:?}"),
        other => panic!("exec-direct at version 2 answered {other:?}"),
    }
}
