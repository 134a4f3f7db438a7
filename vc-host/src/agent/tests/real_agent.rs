//! The client against the real agent server (`vc_agent::serve_connection`)
//! in-process over `tokio::io::duplex`, no VM: the agent runs as a normal
//! process, so host processes (empty container id) are real children of the
//! test.

use std::sync::Arc;
use std::time::Duration;

use vc_agent::{Agent, AgentOptions};
use vc_proto::{ErrorCode, ProcessRef, ProcessSpec};

use super::{within, PIPE};
use crate::agent::{
    collect_output, dialer_fn, AgentClient, AgentClientError, ConnectOptions, Dialer, RawStream,
};

/// A client whose control connection and process streams are all served by
/// one in-process agent, over `tokio::io::duplex` (so stdout and stderr take
/// the agent's pipes: a park needs a socket).
async fn real_client() -> (AgentClient, tempfile::TempDir) {
    real_client_with(&ConnectOptions::default()).await
}

/// As [`real_client`], connected with `opts` (also used by the tests of
/// `runtime::Process`).
pub(crate) async fn real_client_with(opts: &ConnectOptions) -> (AgentClient, tempfile::TempDir) {
    real_client_over(opts, || tokio::io::duplex(PIPE)).await
}

/// As [`real_client_with`], every connection a unix socket pair, as vsock
/// sockets in the guest: stdout and stderr take the direct path (the
/// agent hands the parked sockets to the processes).
pub(crate) async fn real_client_sockets(opts: &ConnectOptions) -> (AgentClient, tempfile::TempDir) {
    real_client_over(opts, || {
        tokio::net::UnixStream::pair().expect("a unix socket pair")
    })
    .await
}

/// A client of one in-process agent; `pair` makes each connection's host
/// and agent ends.
async fn real_client_over<S, P>(opts: &ConnectOptions, pair: P) -> (AgentClient, tempfile::TempDir)
where
    S: vc_agent::Connection,
    P: Fn() -> (S, S) + Send + Sync + 'static,
{
    let run_dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(AgentOptions::process(run_dir.path())).expect("agent");
    let connect = {
        let agent = Arc::clone(&agent);
        move || {
            let (host, guest) = pair();
            tokio::spawn(vc_agent::serve_connection(Arc::clone(&agent), guest));
            host
        }
    };
    let control = connect();
    let dialer: Arc<dyn Dialer> = Arc::new(dialer_fn(move || {
        std::future::ready(Ok(RawStream::new(connect())))
    }));
    let client = AgentClient::from_stream_with(control, opts, Some(dialer))
        .await
        .expect("handshake with the real agent");
    (client, run_dir)
}

fn host_process(exec_id: &str) -> ProcessRef {
    ProcessRef {
        container_id: String::new(),
        exec_id: Some(exec_id.into()),
    }
}

/// `/bin/sh -c script` with a plain `PATH`.
pub(crate) fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/usr/bin:/bin".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    }
}

#[tokio::test]
async fn agent_real_handshake_ping_and_guest_details() {
    let (client, _run_dir) = real_client().await;
    assert_eq!(client.agent_hello().software, vc_agent::software());
    assert_eq!(client.protocol_version(), vc_proto::PROTOCOL_VERSION);
    within(Duration::from_secs(5), client.ping())
        .await
        .expect("ping");
    let details = within(Duration::from_secs(5), client.guest_details())
        .await
        .expect("guest details");
    assert_eq!(details.agent_version, vc_agent::VERSION);
    assert_eq!(details.protocol_version, vc_proto::PROTOCOL_VERSION);
    assert!(!details.kernel_release.is_empty());
}

#[tokio::test]
async fn agent_real_exec_and_collect_output() {
    let (client, _run_dir) = real_client().await;
    let process = host_process("e1");
    let pid = client
        .exec(&process, sh("printf 'out\\0put'; printf err >&2; exit 3"))
        .await
        .expect("exec");
    assert!(pid > 0);
    let output = within(Duration::from_secs(10), collect_output(&client, &process))
        .await
        .expect("output");
    assert_eq!(output.stdout, b"out\0put");
    assert_eq!(output.stderr, b"err");
    assert_eq!(output.exit_code, 3);
}

#[tokio::test]
async fn agent_real_exec_of_a_missing_binary_fails_at_once() {
    let (client, _run_dir) = real_client().await;
    let spec = ProcessSpec {
        args: vec!["/nonexistent/vc-no-such-binary".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    let err = within(
        Duration::from_secs(2),
        client.exec(&host_process("e2"), spec),
    )
    .await
    .expect_err("missing binary");
    match err {
        AgentClientError::Agent { request, source } => {
            assert_eq!(request, "exec");
            assert_eq!(source.code, ErrorCode::ExecFailed, "{source}");
            assert!(source.message.contains("vc-no-such-binary"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}
