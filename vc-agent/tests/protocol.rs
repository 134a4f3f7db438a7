//! The agent's request loop over an in-memory connection: handshake, simple
//! requests, unknown requests, concurrency, shutdown.

mod common;

use std::time::Duration;

use common::{agent, connect};
use vc_proto::{ErrorCode, FrameKind, Request, Response, PROTOCOL_VERSION};

#[tokio::test]
async fn handshake_and_ping() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert_eq!(client.version, PROTOCOL_VERSION);
    assert_eq!(client.call(Request::Ping).await, Response::Ok);
    assert_eq!(client.call(Request::Ping).await, Response::Ok);
}

#[tokio::test]
async fn guest_details() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let Response::GuestDetails(details) = client.call(Request::GuestDetails).await else {
        panic!("no details");
    };
    assert_eq!(details.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(details.protocol_version, PROTOCOL_VERSION);
    let release = nix::sys::utsname::uname()
        .expect("uname")
        .release()
        .to_string_lossy()
        .into_owned();
    assert_eq!(details.kernel_release, release);
    assert!(details.cpus >= 1);
    assert!(details.memory_bytes > 0);
    assert!(details.uptime_ms > 0);
    let Response::Health(health) = client.call(Request::Health).await else {
        panic!("no health");
    };
    assert_eq!(health.containers, 0);
    assert!(health.memory_available_bytes > 0);
}

#[tokio::test]
async fn undecodable_request_is_unsupported_and_the_connection_goes_on() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    // Variant 200 of `Request`: what a newer host might send.
    let payload = [200u8];
    let header = vc_proto::Header {
        version: client.version,
        kind: FrameKind::Request,
        id: 77,
        length: payload.len() as u32,
    };
    let raw = client.writer.get_mut();
    tokio::io::AsyncWriteExt::write_all(raw, &header.encode())
        .await
        .expect("header");
    tokio::io::AsyncWriteExt::write_all(raw, &payload)
        .await
        .expect("payload");
    let (id, response) = client.recv().await;
    assert_eq!(id, 77);
    let Response::Error(e) = response else {
        panic!("expected an error, got {response:?}");
    };
    assert_eq!(e.code, ErrorCode::Unsupported);
    assert_eq!(client.call(Request::Ping).await, Response::Ok);
}

#[tokio::test]
async fn a_response_frame_from_the_host_is_refused_by_id() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    client
        .writer
        .write_message(FrameKind::Response, 5, &Response::Ok)
        .await
        .expect("written");
    let (id, response) = client.recv().await;
    assert_eq!(id, 5);
    assert!(matches!(response, Response::Error(e) if e.code == ErrorCode::InvalidArgument));
}

#[tokio::test]
async fn concurrent_requests_are_answered_out_of_order() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let slow = client
        .send(&Request::Exec {
            process: common::host_process("slow"),
            spec: vc_proto::ProcessSpec {
                args: vec!["/bin/sh".into(), "-c".into(), "sleep 0.3".into()],
                ..Default::default()
            },
        })
        .await;
    let (id, response) = client.recv().await;
    assert_eq!(id, slow);
    assert!(matches!(response, Response::Pid(_)), "{response:?}");
    let waiting = client
        .send(&Request::Wait {
            process: common::host_process("slow"),
        })
        .await;
    let event = client.send(&Request::NextEvent).await;
    let pings: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(client.send(&Request::Ping).await);
        }
        ids
    };
    // The five pings come back first, then the wait and the exit event.
    let mut order = Vec::new();
    for _ in 0..7 {
        let (id, response) = client.recv().await;
        if pings.contains(&id) {
            assert_eq!(response, Response::Ok);
        } else if id == waiting {
            assert_eq!(response, Response::Exited(0));
        } else {
            assert_eq!(id, event);
            assert!(matches!(
                response,
                Response::Event(vc_proto::Event::Exited { code: 0, .. })
            ));
        }
        order.push(id);
    }
    assert!(order[..5].iter().all(|id| pings.contains(id)), "{order:?}");
}

#[tokio::test]
async fn wrong_state_and_not_found_are_typed() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    let response = client
        .call(Request::StartContainer {
            container_id: "nope".into(),
        })
        .await;
    assert!(matches!(response, Response::Error(e) if e.code == ErrorCode::NotFound));
    let response = client
        .call(Request::Wait {
            process: common::host_process("never-started"),
        })
        .await;
    assert!(matches!(response, Response::Error(e) if e.code == ErrorCode::NotFound));
    let response = client
        .call(Request::Signal {
            process: common::host_process("x"),
            signal: 999,
            all: false,
        })
        .await;
    assert!(matches!(response, Response::Error(e) if e.code == ErrorCode::InvalidArgument));
}

#[tokio::test]
async fn setup_pod_outside_a_guest_writes_the_files_once() {
    let (agent, dir) = agent();
    let mut client = connect(&agent).await;
    let setup = vc_proto::PodSetup {
        pod_id: "pod".into(),
        hostname: "podhost".into(),
        ..Default::default()
    };
    assert_eq!(
        client.call(Request::SetupPod(setup.clone())).await,
        Response::Ok
    );
    let hostname = std::fs::read_to_string(dir.path().join("hostname")).expect("hostname file");
    assert_eq!(hostname, "podhost\n");
    let again = client.call(Request::SetupPod(setup)).await;
    assert!(matches!(again, Response::Error(e) if e.code == ErrorCode::AlreadyExists));
}

#[tokio::test]
async fn shutdown_is_answered_then_requested() {
    let (agent, _dir) = agent();
    let mut client = connect(&agent).await;
    assert!(!agent.is_shutting_down());
    assert_eq!(client.call(Request::Shutdown).await, Response::Ok);
    tokio::time::timeout(Duration::from_secs(5), agent.shutdown_requested())
        .await
        .expect("shutdown requested after the answer");
}

#[tokio::test]
async fn many_connections_at_once() {
    let (agent, _dir) = agent();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&agent).await;
            for _ in 0..20 {
                assert_eq!(client.call(Request::Ping).await, Response::Ok);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
}
