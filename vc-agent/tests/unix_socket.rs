//! The agent's unix socket listener over real sockets: exact output with a
//! slow reader, end-of-stream after exit, and the listener stopping on
//! `Shutdown`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vc_agent::{Agent, AgentOptions};
use vc_proto::{
    handshake_client, FrameKind, FrameReader, FrameWriter, Hello, ProcessRef, ProcessSpec, Request,
    Response, StreamAttach, StreamKind,
};

async fn connect(path: &Path) -> UnixStream {
    for _ in 0..200 {
        if let Ok(stream) = UnixStream::connect(path).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no agent socket at {path:?}");
}

async fn call(stream: UnixStream, id: u64, request: &Request) -> (UnixStream, Response) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    handshake_client(&mut reader, &mut writer, &Hello::ours("test"))
        .await
        .expect("handshake");
    writer
        .write_message(FrameKind::Request, id, request)
        .await
        .expect("sent");
    let (got, response) = reader
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("answer");
    assert_eq!(got, id);
    let stream = reader
        .into_inner()
        .reunite(writer.into_inner())
        .expect("same stream");
    (stream, response)
}

async fn attach(path: &Path, process: ProcessRef, stream: StreamKind) -> UnixStream {
    let (read, write) = connect(path).await.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    handshake_client(&mut reader, &mut writer, &Hello::ours("test"))
        .await
        .expect("handshake");
    writer
        .write_message(
            FrameKind::StreamAttach,
            0,
            &StreamAttach { process, stream },
        )
        .await
        .expect("attach sent");
    let (_, response) = reader
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("attach answered");
    assert_eq!(response, Response::Ok);
    reader
        .into_inner()
        .reunite(writer.into_inner())
        .expect("same stream")
}

#[tokio::test]
async fn output_over_a_socket_is_exact_and_ends_after_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(AgentOptions::process(dir.path().join("run"))).expect("agent");
    let path = dir.path().join("agent.sock");
    let server = tokio::spawn({
        let agent = Arc::clone(&agent);
        let path = path.clone();
        async move { vc_agent::serve_unix(agent, &path).await }
    });
    let process = ProcessRef {
        container_id: String::new(),
        exec_id: Some("big".into()),
    };
    // 24 MiB of a pattern with no final newline, then stderr, then exit 3.
    let size: usize = 24 << 20;
    let script = format!("head -c {size} /dev/zero | tr '\\0' 'x'; echo done >&2; exit 3");
    let exec = Request::Exec {
        process: process.clone(),
        spec: ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), script],
            ..ProcessSpec::default()
        },
    };
    let (control, response) = call(connect(&path).await, 1, &exec).await;
    assert!(matches!(response, Response::Pid(_)), "{response:?}");
    let mut out = attach(&path, process.clone(), StreamKind::Stdout).await;
    let mut err = attach(&path, process.clone(), StreamKind::Stderr).await;
    // Slow at first: the process waits on the full pipe, nothing is lost.
    let mut got = Vec::with_capacity(size);
    let mut buf = vec![0u8; 8192];
    for _ in 0..20 {
        let n = out.read(&mut buf).await.expect("read");
        got.extend_from_slice(&buf[..n]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out.read_to_end(&mut got).await.expect("to the end");
    assert_eq!(got.len(), size);
    assert!(got.iter().all(|b| *b == b'x'));
    let mut text = String::new();
    err.read_to_string(&mut text).await.expect("stderr");
    assert_eq!(text, "done\n");
    drop(control);
    let (_, response) = call(connect(&path).await, 2, &Request::Wait { process }).await;
    assert_eq!(response, Response::Exited(3));
    let (mut control, response) = call(connect(&path).await, 3, &Request::Shutdown).await;
    assert_eq!(response, Response::Ok);
    control.shutdown().await.expect("close");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("listener stops after Shutdown")
        .expect("joined")
        .expect("served");
}
