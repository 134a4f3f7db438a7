//! Connecting through a fake hybrid vsock daemon: backoff while the "guest"
//! boots, the deadline, and a VM that dies during boot.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use vc_proto::{FrameKind, FrameReader, FrameWriter, Hello, Request, Response};

use super::{switch, within};
use crate::agent::{AgentClient, AgentClientError, ConnectOptions};
use crate::vsock::VsockAddr;

/// Reads the `CONNECT <port>\n` line of a hybrid vsock client.
async fn read_connect_line(conn: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while conn.read(&mut byte).await.expect("read") == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8(line).expect("utf-8")
}

/// Serves vc-proto (handshake, then `Ok` to everything) on an accepted
/// connection, past the hybrid `OK` line.
async fn serve_agent(conn: UnixStream) {
    let (r, w) = conn.into_split();
    let mut reader = FrameReader::new(r);
    let mut writer = FrameWriter::new(w);
    vc_proto::handshake_server(&mut reader, &mut writer, &Hello::ours("fake-agent 0"))
        .await
        .expect("handshake");
    while let Ok((id, request)) = reader.read_message::<Request>(FrameKind::Request).await {
        assert_eq!(request, Request::Ping);
        writer
            .write_message(FrameKind::Response, id, &Response::Ok)
            .await
            .expect("answer");
    }
}

/// A fake `vhost-device-vsock`: closes the first `refuse` connections after
/// their `CONNECT` line, as the daemon does while nothing listens in the
/// guest, then answers `OK` and serves the agent. Counts connections.
fn fake_daemon(dir: &Path, refuse: u32) -> (VsockAddr, Arc<AtomicU32>) {
    let uds = dir.join("vsock.sock");
    let listener = UnixListener::bind(&uds).expect("bind");
    let seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let line = read_connect_line(&mut conn).await;
            assert_eq!(line, format!("CONNECT {}", vc_proto::AGENT_VSOCK_PORT));
            if n < refuse {
                drop(conn);
                continue;
            }
            conn.write_all(b"OK 1073741824\n").await.expect("ok line");
            tokio::spawn(serve_agent(conn));
        }
    });
    (VsockAddr::Hybrid { uds }, seen)
}

#[tokio::test]
async fn agent_connect_retries_with_backoff_until_the_guest_listens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, seen) = fake_daemon(dir.path(), 4);
    let opts = ConnectOptions::default().deadline(Duration::from_secs(10));
    let started = Instant::now();
    let client = within(Duration::from_secs(10), AgentClient::connect(&addr, &opts))
        .await
        .expect("connect");
    // 10 + 20 + 40 + 80 ms of backoff before the fifth attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    assert_eq!(client.addr(), Some(&addr));
    client.ping().await.expect("ping");
}

#[tokio::test]
async fn an_unanswered_connect_is_abandoned_and_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).expect("bind");
    tokio::spawn(async move {
        // The first CONNECT is swallowed and never answered, as a daemon does
        // with a request sent before the guest's driver was ready.
        let (mut first, _) = listener.accept().await.expect("accept");
        read_connect_line(&mut first).await;
        let (mut conn, _) = listener.accept().await.expect("accept");
        read_connect_line(&mut conn).await;
        conn.write_all(b"OK 1073741824\n").await.expect("ok line");
        serve_agent(conn).await;
        drop(first);
    });
    let addr = VsockAddr::Hybrid { uds };
    let opts = ConnectOptions::default()
        .deadline(Duration::from_secs(10))
        .attempt_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let client = within(Duration::from_secs(5), AgentClient::connect(&addr, &opts))
        .await
        .expect("the second attempt connects");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    client.ping().await.expect("ping");
}

#[tokio::test]
async fn agent_connect_deadline_names_the_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, seen) = fake_daemon(dir.path(), u32::MAX);
    let opts = ConnectOptions::default().deadline(Duration::from_millis(400));
    let started = Instant::now();
    let err = within(Duration::from_secs(5), AgentClient::connect(&addr, &opts))
        .await
        .expect_err("never listens");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    match &err {
        AgentClientError::ConnectDeadline {
            addr: got,
            port,
            attempts,
            last,
            ..
        } => {
            assert_eq!(got, &addr);
            assert_eq!(*port, vc_proto::AGENT_VSOCK_PORT);
            assert!(*attempts >= 3, "{attempts}");
            assert!(last.is_some());
        }
        other => panic!("{other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("1024"), "{message}");
    assert!(seen.load(Ordering::SeqCst) >= 3);
}

#[tokio::test]
async fn agent_connect_missing_socket_is_retried_until_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = VsockAddr::Hybrid {
        uds: dir.path().join("not-yet.sock"),
    };
    let opts = ConnectOptions::default().deadline(Duration::from_millis(200));
    let err = AgentClient::connect(&addr, &opts)
        .await
        .expect_err("no daemon");
    assert!(
        matches!(err, AgentClientError::ConnectDeadline { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_connect_fails_early_when_the_vm_dies_during_boot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (addr, _) = fake_daemon(dir.path(), u32::MAX);
    let (alive, probe) = switch();
    let opts = ConnectOptions::default()
        .deadline(Duration::from_secs(30))
        .vm_alive(probe);
    let connecting = tokio::spawn(async move { AgentClient::connect(&addr, &opts).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alive.store(false, Ordering::SeqCst);
    let err = within(Duration::from_secs(2), connecting)
        .await
        .expect("join")
        .expect_err("vm died");
    assert!(
        matches!(err, AgentClientError::VmGone { during: "connect" }),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_connect_handshake_timeout_is_typed() {
    // The daemon says OK, but nothing speaks vc-proto behind it.
    let dir = tempfile::tempdir().expect("tempdir");
    let uds = dir.path().join("vsock.sock");
    let listener = UnixListener::bind(&uds).expect("bind");
    tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        read_connect_line(&mut conn).await;
        conn.write_all(b"OK 5\n").await.expect("ok");
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let opts = ConnectOptions::default().call_timeout(Duration::from_millis(200));
    let err = AgentClient::connect(&VsockAddr::Hybrid { uds }, &opts)
        .await
        .expect_err("silent peer");
    assert!(
        matches!(
            err,
            AgentClientError::Timeout {
                request: "handshake",
                ..
            }
        ),
        "{err:?}"
    );
}
