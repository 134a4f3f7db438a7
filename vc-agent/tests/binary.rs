//! The `vc-agent` binary as a normal process: banner, unix socket, Shutdown
//! ends it with status 0; bad arguments exit 2 with the usage.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vc_proto::{handshake_client, FrameKind, FrameReader, FrameWriter, Hello, Request, Response};

/// Kills the child if the test fails before it exits.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_a_unix_socket_until_shutdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("agent.sock");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_vc-agent"))
            .arg("--listen-unix")
            .arg(&socket)
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vc-agent starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(stream) => break stream,
            Err(e) if Instant::now() > deadline => panic!("no socket at {socket:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    handshake_client(&mut reader, &mut writer, &Hello::ours("test"))
        .await
        .expect("handshake");
    writer
        .write_message(FrameKind::Request, 1, &Request::Shutdown)
        .await
        .expect("shutdown sent");
    let (id, response) = reader
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("answer");
    assert_eq!((id, response), (1, Response::Ok));
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "vc-agent did not exit after Shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    let mut out = String::new();
    child
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout read");
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains("vc-agent starting")),
        "{out:?}"
    );
    assert!(!socket.exists(), "the socket file is removed");
}

#[test]
fn bad_arguments_print_the_usage() {
    let output = Command::new(env!("CARGO_BIN_EXE_vc-agent"))
        .arg("--frobnicate")
        .output()
        .expect("vc-agent runs");
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--frobnicate") && err.contains("usage: vc-agent"),
        "{err}"
    );
}
