//! The boot path: a pod VM boots from the guest image under the software
//! emulator, its agent answers over vsock, and everything is gone after stop.

mod support;

use std::time::{Duration, Instant};

use anyhow::Result;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::pod::{wait_pids_gone, TestRuntime};
use vc_host::agent::AgentClientError;
use vc_host::state::State;

fn pids(status: &vc_host::runtime::PodStatus) -> Vec<i32> {
    status.processes.iter().map(|p| p.pid).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_handshake_details_and_clean_shutdown() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.pod("boot").id;
    t.rt.create_pod(t.pod("boot")).await?;
    let started = t.rt.start_pod(&id).await?;
    assert_eq!(started.state, State::Running);
    let helpers = pids(&started);
    assert_eq!(
        helpers.len(),
        4,
        "qemu, console logger, vsock daemon, virtiofsd: {helpers:?}"
    );

    let agent = t.rt.pod_agent(&id).await?;
    let details = agent.guest_details().await?;
    assert_eq!(details.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(details.protocol_version, vc_proto::PROTOCOL_VERSION);
    assert_eq!(details.kernel_release, t.image.manifest.kernel_version);
    // Asked right after the handshake, the answer waits for the modules the
    // agent loads once it listens: every module of the image, in order.
    let modules: Vec<String> = t
        .image
        .manifest
        .modules
        .iter()
        .map(|m| m.file.clone())
        .collect();
    assert_eq!(details.modules_loaded, modules);
    agent.ping().await?;
    drop(agent);

    let stopped = t.rt.stop_pod(&id).await?;
    assert_eq!(stopped.state, State::Stopped);
    assert!(
        wait_pids_gone(&helpers, Duration::from_secs(5)),
        "processes left after stop: {helpers:?}"
    );
    t.rt.delete_pod(&id).await?;
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_pods_boot_at_once_each_on_its_own_socket() -> Result<()> {
    let t = TestRuntime::new()?;
    let ids: Vec<_> = (0..4).map(|i| t.pod(&format!("quad{i}")).id).collect();
    for id in &ids {
        t.rt.create_pod(vc_host::config::PodConfig::new(id.clone()))
            .await?;
    }
    let starts = ids.iter().map(|id| t.rt.start_pod(id));
    for status in futures::future::join_all(starts).await {
        assert_eq!(status?.state, State::Running);
    }
    let mut addrs = std::collections::BTreeSet::new();
    for id in &ids {
        let agent = t.rt.pod_agent(id).await?;
        agent.ping().await?;
        addrs.insert(format!("{:?}", agent.addr()));
    }
    assert_eq!(addrs.len(), 4, "each pod has its own address: {addrs:?}");
    for id in &ids {
        t.rt.stop_pod(id).await?;
        t.rt.delete_pod(id).await?;
    }
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_qemu_fails_a_pending_call_fast_and_stop_cleans_up() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.pod("killed").id;
    t.rt.create_pod(t.pod("killed")).await?;
    let status = t.rt.start_pod(&id).await?;
    let helpers = pids(&status);
    let qemu = status
        .processes
        .iter()
        .find(|p| p.name == "qemu")
        .expect("a qemu process")
        .pid;

    // A call that stays in flight: the next event never comes.
    let agent = t.rt.pod_agent(&id).await?;
    let pending = tokio::spawn({
        let agent = agent.clone();
        async move { agent.next_event().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(Pid::from_raw(qemu), Signal::SIGKILL)?;
    let killed_at = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), pending).await??;
    let elapsed = killed_at.elapsed();
    // The pod's clients watch QEMU's pidfd: the error names it.
    match &result {
        Err(AgentClientError::HelperDied { death, .. }) => assert_eq!(death.helper, "qemu"),
        other => panic!("expected HelperDied naming qemu, got {other:?}"),
    }
    assert!(
        elapsed < Duration::from_secs(2),
        "reported after {elapsed:?}"
    );

    // The pod is now reported broken, and stop cleans every helper.
    assert_eq!(t.rt.pod_status(&id).await?.state, State::Broken);
    t.rt.stop_pod(&id).await?;
    assert!(
        wait_pids_gone(&helpers, Duration::from_secs(5)),
        "helpers left after stop: {helpers:?}"
    );
    t.rt.delete_pod(&id).await?;
    assert!(t.leftover_pods().is_empty());
    assert!(t.leftover_mounts().is_empty());
    Ok(())
}

/// vhost-device-vsock 0.3 kills its vring worker (a panic on `EPIPE`) when
/// the guest's `OK` meets a host socket already closed, and from then on
/// answers no `CONNECT`. Connects cancelled in the middle of the exchange
/// (as the client's per-attempt timeout does under load) must leave the
/// daemon answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_vsock_connects_leave_the_daemon_answering() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.pod("cancel").id;
    t.rt.create_pod(t.pod("cancel")).await?;
    t.rt.start_pod(&id).await?;
    let agent = t.rt.pod_agent(&id).await?;
    let addr = agent.addr().cloned().expect("a client made by connect");
    drop(agent);

    // The guest takes milliseconds to answer under TCG. Each connect runs as
    // a task that is aborted after a spin of 0.1 to 4 ms on this thread
    // (tokio's timers round up to whole milliseconds, which let every
    // connect finish first on a quiet host): most aborts land after the
    // `CONNECT` was written and before the answer.
    let mut cancelled = 0;
    for step in 1..=20u64 {
        let cutoff = Duration::from_micros(200 * step - 100);
        let task = tokio::spawn({
            let addr = addr.clone();
            async move { addr.connect(vc_proto::AGENT_VSOCK_PORT).await }
        });
        let spin = Instant::now();
        while spin.elapsed() < cutoff && !task.is_finished() {
            std::hint::spin_loop();
        }
        task.abort();
        if matches!(task.await, Err(e) if e.is_cancelled()) {
            cancelled += 1;
        }
    }
    assert!(cancelled > 0, "no connect was cancelled");

    let answered = tokio::time::timeout(Duration::from_secs(20), async {
        let agent = t.rt.pod_agent(&id).await?;
        agent.ping().await?;
        anyhow::Ok(())
    })
    .await;
    let log = std::fs::read_to_string(t.root().join("pods").join(id.as_str()).join("vm/vsock.log"))
        .unwrap_or_default();
    assert!(!log.contains("panicked"), "vhost-device-vsock: {log}");
    answered.map_err(|_| {
        anyhow::anyhow!("the agent did not answer within 20 s after {cancelled} cancelled connects")
    })??;

    t.rt.stop_pod(&id).await?;
    t.rt.delete_pod(&id).await?;
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}
