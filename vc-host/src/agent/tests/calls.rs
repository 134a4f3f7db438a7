//! Calls on one control connection: routing by id, concurrency, timeouts,
//! error mapping, connection loss and the liveness probe.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vc_proto::{
    AgentError, ContainerStatus, ErrorCode, GuestDetails, Health, ProcessRef, ProcessState,
    Request, Response,
};

use super::{pair, pair_with, serve, switch, within};
use crate::agent::{AgentClientError, ConnectOptions, LinkDown, EXIT_CODE_VM_GONE};

fn details() -> GuestDetails {
    GuestDetails {
        agent_version: "0.0.0".into(),
        protocol_version: 1,
        kernel_release: "6.1.0-test".into(),
        modules_loaded: vec!["vsock.ko".into()],
        uptime_ms: 1,
        cpus: 1,
        memory_bytes: 1 << 28,
    }
}

fn health() -> Health {
    Health {
        containers: 2,
        memory_available_bytes: 3,
        load_1m_centi: 4,
    }
}

fn status(id: &str) -> ContainerStatus {
    ContainerStatus {
        id: id.into(),
        state: ProcessState::Running,
        pid: Some(7),
        exit_code: None,
        oom_killed: false,
    }
}

fn main_process(container: &str) -> ProcessRef {
    ProcessRef {
        container_id: container.into(),
        exec_id: None,
    }
}

#[tokio::test]
async fn agent_call_typed_methods_unpack_their_replies() {
    let (client, agent) = pair().await;
    serve(agent, |request| {
        Some(match request {
            Request::Ping => Response::Ok,
            Request::GuestDetails => Response::GuestDetails(details()),
            Request::Health => Response::Health(health()),
            Request::StartContainer { .. } => Response::Pid(42),
            Request::StopContainer { grace_ms, .. } => Response::Exited(grace_ms as i32),
            Request::Wait { .. } => Response::Exited(137),
            Request::ContainerState { container_id } => {
                Response::ContainerStatus(status(&container_id))
            }
            Request::ListRoutes => Response::Routes(vec![]),
            _ => Response::Ok,
        })
    });
    client.ping().await.expect("ping");
    assert_eq!(client.guest_details().await.expect("details"), details());
    assert_eq!(client.health().await.expect("health"), health());
    assert_eq!(client.start_container("c1").await.expect("start"), 42);
    let code = client
        .stop_container("c1", Duration::from_millis(1500))
        .await
        .expect("stop");
    assert_eq!(code, 1500, "grace travels in milliseconds");
    assert_eq!(client.wait(&main_process("c1")).await.expect("wait"), 137);
    assert_eq!(
        client.container_state("c9").await.expect("state"),
        status("c9")
    );
    assert!(client.list_routes().await.expect("routes").is_empty());
    client.remove_container("c1").await.expect("remove");
    client.shutdown().await.expect("shutdown");
    assert_eq!(client.agent_hello().software, "fake-agent 0");
    assert_eq!(client.protocol_version(), vc_proto::PROTOCOL_VERSION);
}

#[tokio::test]
async fn agent_call_container_pids_are_bounded() {
    let (client, agent) = pair().await;
    serve(agent, |request| match request {
        Request::ContainerPids { container_id } if container_id == "c1" => {
            Some(Response::Pids(vec![1, 7, 42]))
        }
        Request::ContainerPids { container_id } if container_id == "big" => Some(Response::Pids(
            (0..=vc_proto::MAX_CONTAINER_PIDS as u32).collect(),
        )),
        _ => Some(Response::Ok),
    });
    assert_eq!(client.container_pids("c1").await.expect("pids"), [1, 7, 42]);
    let err = client
        .container_pids("big")
        .await
        .expect_err("over the limit");
    assert!(
        matches!(
            err,
            AgentClientError::OversizedReply {
                request: "container-pids",
                items,
                limit: vc_proto::MAX_CONTAINER_PIDS,
            } if items == vc_proto::MAX_CONTAINER_PIDS + 1
        ),
        "{err:?}"
    );
    let err = client.container_pids("c2").await.expect_err("wrong reply");
    assert!(
        matches!(
            err,
            AgentClientError::UnexpectedResponse {
                request: "container-pids",
                got: "ok"
            }
        ),
        "{err:?}"
    );
    // The connection is still usable.
    assert_eq!(client.container_pids("c1").await.expect("pids").len(), 3);
}

#[tokio::test]
async fn agent_call_out_of_order_responses_reach_their_callers() {
    let (client, mut agent) = pair().await;
    let calls = tokio::spawn({
        let client = client.clone();
        async move { tokio::join!(client.guest_details(), client.health()) }
    });
    let (first_id, first) = agent.next_request().await.expect("first request");
    let (second_id, second) = agent.next_request().await.expect("second request");
    assert_ne!(first_id, second_id);
    // Answer in the reverse order of arrival.
    for (id, request) in [(second_id, second), (first_id, first)] {
        let response = match request {
            Request::GuestDetails => Response::GuestDetails(details()),
            Request::Health => Response::Health(health()),
            other => panic!("unexpected {other:?}"),
        };
        agent.respond(id, &response).await;
    }
    let (d, h) = within(Duration::from_secs(5), calls).await.expect("join");
    assert_eq!(d.expect("details"), details());
    assert_eq!(h.expect("health"), health());
}

#[tokio::test]
async fn agent_call_many_concurrent_calls_each_get_their_own_answer() {
    const CALLS: usize = 200;
    let (client, mut agent) = pair().await;
    let fake = tokio::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..CALLS {
            held.push(agent.next_request().await.expect("request"));
        }
        held.reverse();
        for (id, request) in held {
            let Request::ContainerState { container_id } = request else {
                panic!("unexpected {request:?}");
            };
            agent
                .respond(id, &Response::ContainerStatus(status(&container_id)))
                .await;
        }
        agent
    });
    let calls = (0..CALLS).map(|i| {
        let client = client.clone();
        async move {
            let id = format!("c{i}");
            let got = client.container_state(&id).await.expect("state");
            assert_eq!(got.id, id);
        }
    });
    within(Duration::from_secs(10), futures::future::join_all(calls)).await;
    let _agent = fake.await.expect("fake");
}

#[tokio::test]
async fn agent_call_times_out_and_the_connection_stays_usable() {
    let opts = ConnectOptions::default().call_timeout(Duration::from_millis(150));
    let (client, mut agent) = pair_with(&opts, None).await;
    let started = Instant::now();
    let (err, late) = tokio::join!(client.ping(), agent.next_request());
    let err = err.expect_err("no answer");
    assert!(
        matches!(err, AgentClientError::Timeout { request: "ping", after } if after == Duration::from_millis(150)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // The late answer is dropped; the next call works.
    let (late_id, _) = late.expect("request");
    agent.respond(late_id, &Response::Ok).await;
    let (ok, ()) = tokio::join!(client.health(), async {
        let (id, _) = agent.next_request().await.expect("request");
        agent.respond(id, &Response::Health(health())).await;
    });
    assert_eq!(ok.expect("health after timeout"), health());
}

#[tokio::test]
async fn agent_call_wait_has_no_call_timeout() {
    let opts = ConnectOptions::default().call_timeout(Duration::from_millis(50));
    let (client, mut agent) = pair_with(&opts, None).await;
    let process = main_process("c");
    let (code, _) = tokio::join!(client.wait(&process), async {
        let (id, _) = agent.next_request().await.expect("wait");
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.respond(id, &Response::Exited(3)).await;
    });
    assert_eq!(code.expect("wait outlives the call timeout"), 3);
}

#[tokio::test]
async fn agent_call_errors_and_wrong_replies_are_typed() {
    let (client, agent) = pair().await;
    serve(agent, |request| {
        Some(match request {
            Request::StartContainer { .. } => {
                Response::Error(AgentError::new(ErrorCode::NotFound, "no container c1"))
            }
            Request::Ping => Response::Pid(3),
            _ => Response::Ok,
        })
    });
    let err = client.start_container("c1").await.expect_err("agent error");
    match &err {
        AgentClientError::Agent { request, source } => {
            assert_eq!(*request, "start-container");
            assert_eq!(source.code, ErrorCode::NotFound);
            assert_eq!(source.message, "no container c1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "the agent failed start-container");
    let err = client.ping().await.expect_err("wrong reply");
    assert!(
        matches!(
            err,
            AgentClientError::UnexpectedResponse {
                request: "ping",
                got: "pid"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_call_connection_loss_fails_every_pending_call_at_once() {
    let (client, mut agent) = pair().await;
    let pending = tokio::spawn({
        let client = client.clone();
        async move {
            let process = main_process("c");
            tokio::join!(client.ping(), client.wait(&process), client.next_event())
        }
    });
    for _ in 0..3 {
        agent.next_request().await.expect("request");
    }
    let started = Instant::now();
    drop(agent);
    let (a, b, c) = within(Duration::from_secs(1), pending).await.expect("join");
    assert!(started.elapsed() < Duration::from_millis(500));
    for err in [
        a.expect_err("ping"),
        b.expect_err("wait"),
        c.expect_err("event"),
    ] {
        assert!(
            matches!(
                err,
                AgentClientError::ConnectionLost {
                    cause: LinkDown::Closed,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), Some(EXIT_CODE_VM_GONE));
    }
    // Later calls fail at once with the same cause.
    let err = within(Duration::from_secs(1), client.ping())
        .await
        .expect_err("down");
    assert!(
        matches!(err, AgentClientError::ConnectionLost { .. }),
        "{err:?}"
    );
    assert!(matches!(client.link_down(), Some(LinkDown::Closed)));
}

#[tokio::test]
async fn agent_call_dead_vm_fails_a_hanging_call_within_two_seconds() {
    let (alive, probe) = switch();
    let opts = ConnectOptions::default().vm_alive(probe);
    // The fake agent keeps the connection open and never answers, like a
    // vsock daemon whose VM was killed.
    let (client, agent) = pair_with(&opts, None).await;
    let _fake = serve(agent, |_| None);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.wait(&main_process("c")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    alive.store(false, Ordering::SeqCst);
    let killed = Instant::now();
    let err = within(Duration::from_secs(2), waiting)
        .await
        .expect("join")
        .expect_err("vm gone");
    assert!(
        matches!(err, AgentClientError::VmGone { during: "wait" }),
        "{err:?}"
    );
    assert!(killed.elapsed() < Duration::from_secs(2));
    assert_eq!(err.exit_code(), Some(EXIT_CODE_VM_GONE));
    let err = client.ping().await.expect_err("still gone");
    assert!(matches!(err, AgentClientError::VmGone { .. }), "{err:?}");
}

#[tokio::test]
async fn agent_call_connection_loss_with_a_dead_vm_reports_vm_gone() {
    let (alive, probe) = switch();
    let opts = ConnectOptions::default().vm_alive(probe);
    let (client, mut agent) = pair_with(&opts, None).await;
    let (err, _) = tokio::join!(client.ping(), async {
        agent.next_request().await.expect("request");
        alive.store(false, Ordering::SeqCst);
        drop(agent);
    });
    let err = err.expect_err("gone");
    assert!(matches!(err, AgentClientError::VmGone { .. }), "{err:?}");
}

#[tokio::test]
async fn agent_call_oversized_request_fails_alone() {
    let (client, agent) = pair().await;
    serve(agent, |_| Some(Response::Ok));
    let setup = vc_proto::PodSetup {
        hostname: "x".repeat(vc_proto::DEFAULT_MAX_PAYLOAD as usize + 1),
        ..Default::default()
    };
    let err = client.setup_pod(setup).await.expect_err("too large");
    assert!(
        matches!(
            err,
            AgentClientError::Encode {
                request: "setup-pod",
                ..
            }
        ),
        "{err:?}"
    );
    client.ping().await.expect("connection still usable");
}

#[tokio::test]
async fn agent_call_dropped_caller_leaves_nothing_behind() {
    let (client, mut agent) = pair().await;
    let abandoned = tokio::time::timeout(Duration::from_millis(50), client.ping()).await;
    assert!(abandoned.is_err());
    let (old_id, _) = agent.next_request().await.expect("request");
    // The abandoned call's answer is dropped as an unknown id.
    agent.respond(old_id, &Response::Ok).await;
    let (ok, _) = tokio::join!(client.ping(), async {
        let (id, _) = agent.next_request().await.expect("request");
        assert_ne!(id, old_id);
        agent.respond(id, &Response::Ok).await;
    });
    ok.expect("ping");
}

#[tokio::test]
async fn agent_call_timeout_policy() {
    let (client, _agent) = pair().await;
    let base = ConnectOptions::default().call_timeout;
    let p = main_process("c");
    assert_eq!(client.timeout_for(&Request::Wait { process: p }), None);
    assert_eq!(client.timeout_for(&Request::NextEvent), None);
    assert_eq!(client.timeout_for(&Request::Ping), Some(base));
    assert_eq!(
        client.timeout_for(&Request::StopContainer {
            container_id: "c".into(),
            grace_ms: 10_000
        }),
        Some(base + Duration::from_secs(10))
    );
}
