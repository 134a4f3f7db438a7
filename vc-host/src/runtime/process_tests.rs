//! [`Process`] against the real agent server in-process over
//! `tokio::io::duplex`, no VM: the agent runs as a normal process, so host
//! processes (empty container id) are real children of the test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use vc_proto::{ProcessRef, ProcessSpec, StreamKind};

use super::{Process, ProcessError, StdioPath};
use crate::agent::tests::real_agent::{real_client_sockets, real_client_with, sh};
use crate::agent::{AgentClient, AgentClientError, ConnectOptions, StreamError};

const LIMIT: Duration = Duration::from_secs(10);

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {LIMIT:?}"))
}

/// A client served by one in-process agent; `alive` is its VM liveness probe.
async fn client(alive: Arc<AtomicBool>) -> (AgentClient, tempfile::TempDir) {
    let opts = ConnectOptions::default()
        .vm_alive(move || alive.load(Ordering::SeqCst))
        .liveness_interval(Duration::from_millis(50));
    real_client_with(&opts).await
}

/// As [`client`], over unix socket pairs: the direct path.
async fn socket_client() -> (AgentClient, tempfile::TempDir) {
    real_client_sockets(&ConnectOptions::default()).await
}

fn host(exec_id: &str) -> ProcessRef {
    ProcessRef {
        container_id: String::new(),
        exec_id: Some(exec_id.into()),
    }
}

fn alive() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(true))
}

#[tokio::test]
async fn process_output_keeps_streams_apart() {
    let (c, _dir) = client(alive()).await;
    let p = within(Process::spawn(
        &c,
        host("p1"),
        sh("printf 'o\\0ut'; printf err >&2; exit 3"),
        false,
    ))
    .await
    .expect("spawn");
    let out = within(p.output()).await.expect("output");
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"o\0ut"[..], &b"err"[..], 3)
    );
}

#[tokio::test]
async fn process_exec_failure_names_the_program() {
    let (c, _dir) = client(alive()).await;
    let spec = ProcessSpec {
        args: vec!["/nonexistent/vc-missing-prog".into()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    let err = within(Process::spawn(&c, host("p2"), spec, false))
        .await
        .expect_err("missing program");
    assert!(matches!(err, ProcessError::ExecFailed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("/nonexistent/vc-missing-prog"),
        "{err}"
    );
    assert_eq!(err.exit_code(), None);
}

#[tokio::test]
async fn process_stdin_reaches_end_of_file_and_closed_without_it() {
    let (c, _dir) = client(alive()).await;
    let mut p = within(Process::spawn(&c, host("p3"), sh("wc -c"), true))
        .await
        .expect("spawn");
    let mut stdin = p.stdin.take().expect("stdin attached");
    stdin.write_all(&[7u8; 300_000]).await.expect("write");
    stdin.shutdown().await.expect("shutdown");
    let out = within(p.output()).await.expect("output");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "300000");
    // Without stdin the process reads end-of-file at once.
    let p = within(Process::spawn(&c, host("p4"), sh("cat; echo done"), false))
        .await
        .expect("spawn");
    assert!(p.stdin.is_none());
    let out = within(p.output()).await.expect("output");
    assert_eq!(out.stdout, b"done\n");
}

#[tokio::test]
async fn process_signal_and_output_limit() {
    let (c, _dir) = client(alive()).await;
    let p = within(Process::spawn(&c, host("p5"), sh("exec sleep 100"), false))
        .await
        .expect("spawn");
    p.signal(libc::SIGTERM).await.expect("signal");
    assert_eq!(within(p.wait()).await.expect("wait"), 143);
    let p = within(Process::spawn(
        &c,
        host("p6"),
        sh("head -c 100000 /dev/zero"),
        false,
    ))
    .await
    .expect("spawn");
    let err = within(p.output_limited(1000)).await.expect_err("too large");
    assert!(
        matches!(
            err,
            ProcessError::OutputTooLarge {
                stream: StreamKind::Stdout,
                limit: 1000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn process_waiter_gets_255_when_the_vm_is_gone() {
    let flag = alive();
    let (c, _dir) = client(Arc::clone(&flag)).await;
    // Short-lived: once the link is down nothing can signal it, and it must
    // not outlive the test by much.
    let p = within(Process::spawn(&c, host("p7"), sh("exec sleep 3"), false))
        .await
        .expect("spawn");
    let killer = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        flag.store(false, Ordering::SeqCst);
    };
    let (result, ()) = within(async { tokio::join!(p.wait(), killer) }).await;
    let err = result.expect_err("the VM is gone");
    assert!(err.vm_gone(), "{err:?}");
    assert_eq!(err.exit_code(), Some(vc_proto::EXIT_CODE_VM_GONE));
}

#[test]
fn exec_environment_overrides_the_containers() {
    let mut env = vec!["PATH=/bin".to_owned(), "A=1".to_owned(), "B=2".to_owned()];
    super::merge_env(
        &mut env,
        vec!["A=3".to_owned(), "C=4".to_owned(), "PATH=/bin".to_owned()],
    );
    assert_eq!(env, ["B=2", "A=3", "C=4", "PATH=/bin"]);
}

fn container_with_env(env: &[&str]) -> crate::config::ContainerConfig {
    let id = "c1".parse().expect("a valid container id");
    let mut c = crate::config::ContainerConfig::new(id, "/rootfs", vec!["sh".to_owned()]);
    c.env = env.iter().map(|e| (*e).to_owned()).collect();
    c.cwd = "/work".to_owned();
    c
}

#[test]
fn an_exec_spec_takes_the_containers_settings_under_its_own() {
    let container = container_with_env(&["PATH=/bin", "A=1"]);
    let mut config = super::ProcessConfig::new(["ls", "-l"]);
    config.env = vec!["A=2".to_owned()];
    config.user = Some(crate::config::UserConfig {
        uid: 7,
        gid: 8,
        additional_gids: vec![9],
    });
    config.terminal = true;
    let spec = config.exec_spec(&container, super::ExecEnv::Extend);
    assert_eq!(spec.args, ["ls", "-l"]);
    assert_eq!(spec.env, ["PATH=/bin", "A=2"]);
    assert_eq!(spec.cwd, "/work", "the container's cwd when unset");
    assert_eq!((spec.user.uid, spec.user.gid), (7, 8));
    assert_eq!(spec.user.additional_gids, [9]);
    assert!(spec.terminal);
}

#[test]
fn an_oci_exec_environment_replaces_the_containers() {
    let container = container_with_env(&["PATH=/bin", "A=1"]);
    let mut config = super::ProcessConfig::new(["env"]);
    config.env = vec!["B=2".to_owned()];
    config.cwd = Some("/tmp".to_owned());
    let spec = config.exec_spec(&container, super::ExecEnv::Replace);
    assert_eq!(spec.env, [crate::config::DEFAULT_PATH, "B=2"]);
    assert_eq!(spec.cwd, "/tmp");

    let inherit = super::ProcessConfig::new(["env"]);
    let spec = inherit.exec_spec(&container, super::ExecEnv::Replace);
    assert_eq!(spec.env, ["PATH=/bin", "A=1"], "no env: the container's");
}

/// Over sockets the process gets its connections (the agent has nothing to
/// attach afterwards); forced, the pipes; over `duplex` the park is refused
/// and the pipes are taken without the caller noticing. The output is the
/// same byte for byte every way, stdin works beside direct output, and a
/// process that exits right after writing has written everything.
#[tokio::test]
async fn direct_and_pipe_paths_give_the_same_bytes() {
    let script = "printf 'out\\0put'; printf err >&2; head -c 200000 /dev/zero; exit 3";
    let mut expected = b"out\0put".to_vec();
    expected.extend(std::iter::repeat_n(0u8, 200_000));
    let (sockets, _dir) = socket_client().await;
    assert!(sockets.direct_streams());
    let (memory, _dir2) = client(alive()).await;
    let runs = [
        (&sockets, "d", StdioPath::Direct, true),
        (&sockets, "p", StdioPath::Pipes, false),
        (&memory, "m", StdioPath::Direct, false),
    ];
    for (agent, id, path, direct) in runs {
        let p = within(Process::spawn_with(
            agent,
            host(id),
            sh(script),
            false,
            path,
        ))
        .await
        .expect("spawned");
        // Attached once either way; a direct stream was never the agent's.
        let refused = match agent.attach(&host(id), StreamKind::Stdout).await {
            Err(AgentClientError::Stream {
                source: StreamError::Refused(e),
                ..
            }) => e.message,
            other => panic!("{id}: a second stdout attach gave {other:?}"),
        };
        assert_eq!(refused.contains("handed to it"), direct, "{id}: {refused}");
        let out = within(p.output()).await.expect("output");
        assert!(out.stdout == expected, "{id} ({path:?}): stdout differs");
        assert_eq!(out.stderr, b"err", "{id}");
        assert_eq!(out.exit_code, 3, "{id}");
    }

    let mut p = within(Process::spawn(&sockets, host("cat"), sh("wc -c"), true))
        .await
        .expect("spawned");
    let mut stdin = p.stdin.take().expect("stdin");
    stdin.write_all(&[7u8; 100_000]).await.expect("written");
    stdin.shutdown().await.expect("closed");
    let out = within(p.output()).await.expect("output");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
}
