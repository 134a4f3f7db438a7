//! Every pod and container verb through the library on real VMs, every wrong
//! transition refused with both states named, invalid and duplicate ids
//! refused without creating anything, and a pod whose QEMU dies cleaned up.

mod support;

use std::fmt::Debug;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::pod::{wait_pids_gone, TestRuntime};
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::share::guest_rootfs_path;
use vc_host::runtime::{ContainerStatus, PodStatus, RuntimeError};
use vc_host::state::State;
use vc_host::store::StoreError;

fn pids(status: &PodStatus) -> Vec<i32> {
    status.processes.iter().map(|p| p.pid).collect()
}

fn cid(id: &str) -> ContainerId {
    ContainerId::new(id).expect("valid container id")
}

/// Asserts `result` is a transition error from state `from`, naming it and the
/// operation.
fn assert_refused<T: Debug>(result: Result<T, RuntimeError>, op: &str, from: State) {
    match result {
        Err(RuntimeError::Transition(e)) => {
            assert_eq!(e.from, from, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("that is {from}")),
                "message does not name the current state {from}: {msg}"
            );
            assert!(msg.contains(op), "message does not name {op}: {msg}");
            assert!(msg.contains("it must be"), "no allowed states in: {msg}");
        }
        other => panic!("{op} from {from}: expected a transition error, got {other:?}"),
    }
}

async fn ids(t: &TestRuntime) -> Result<Vec<String>> {
    Ok(t.rt
        .list_pods()
        .await?
        .into_iter()
        .map(|p| p.id.to_string())
        .collect())
}

/// Polls the container's status until it is stopped.
async fn wait_stopped(t: &TestRuntime, pod: &PodId, c: &ContainerId) -> Result<ContainerStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = t.rt.container_status(pod, c).await?;
        if status.state == State::Stopped {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("container {c} still {} after 30 s", status.state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_verb_and_wrong_pod_transitions() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.pod("life").id;

    let created = t.rt.create_pod(t.pod("life")).await?;
    assert_eq!(created.state, State::Ready);
    assert!(created.processes.is_empty(), "{:?}", created.processes);
    assert_refused(t.rt.pause_pod(&id).await, "pause", State::Ready);
    assert_refused(t.rt.resume_pod(&id).await, "resume", State::Ready);

    let started = t.rt.start_pod(&id).await?;
    assert_eq!(started.state, State::Running);
    let helpers = pids(&started);
    assert_eq!(
        helpers.len(),
        4,
        "qemu, console logger, vsock daemon, virtiofsd: {helpers:?}"
    );
    assert_eq!(t.rt.pod_status(&id).await?.state, State::Running);

    assert_refused(t.rt.start_pod(&id).await, "start", State::Running);
    assert_refused(t.rt.delete_pod(&id).await, "delete", State::Running);
    assert_eq!(
        t.rt.pod_status(&id).await?.state,
        State::Running,
        "a refused delete leaves the pod running"
    );
    assert_refused(t.rt.resume_pod(&id).await, "resume", State::Running);

    let paused = t.rt.pause_pod(&id).await?;
    assert_eq!(paused.state, State::Paused);
    assert_eq!(t.rt.pod_status(&id).await?.state, State::Paused);
    assert_refused(t.rt.pause_pod(&id).await, "pause", State::Paused);
    assert_refused(t.rt.start_pod(&id).await, "start", State::Paused);
    let resumed = t.rt.resume_pod(&id).await?;
    assert_eq!(resumed.state, State::Running);
    assert_eq!(pids(&resumed), helpers, "resume keeps the same processes");

    // The initrd holds only the agent: borrow busybox from a container's
    // rootfs, which a created container has in the pod's share.
    let tools = cid("tools");
    t.rt.create_container(&id, t.container("tools", &["/bin/true"]))
        .await?;
    let busybox = format!("{}/bin/busybox", guest_rootfs_path(&tools));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        t.rt.enter_pod(&id, vec![busybox, "uname".to_owned(), "-r".to_owned()]),
    )
    .await
    .context("uname -r in the VM did not end within 2 minutes")??;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        t.image.manifest.kernel_version,
        "{out:?}"
    );

    t.rt.delete_container(&id, &tools).await?;

    let listed = t.rt.list_pods().await?;
    let me = listed
        .iter()
        .find(|p| p.id == id)
        .with_context(|| format!("pod not listed: {listed:?}"))?;
    assert_eq!(me.state, State::Running);

    let stopped = t.rt.stop_pod(&id).await?;
    assert_eq!(stopped.state, State::Stopped);
    assert!(stopped.processes.is_empty(), "{:?}", stopped.processes);
    assert!(
        wait_pids_gone(&helpers, Duration::from_secs(5)),
        "processes left after stop: {helpers:?}"
    );
    assert_eq!(t.rt.pod_status(&id).await?.state, State::Stopped);
    assert_refused(t.rt.start_pod(&id).await, "start", State::Stopped);
    assert_refused(t.rt.pause_pod(&id).await, "pause", State::Stopped);
    match t
        .rt
        .create_container(&id, t.container("late", &["/bin/true"]))
        .await
    {
        Err(RuntimeError::PodNotRunning { state, .. }) => assert_eq!(state, State::Stopped),
        other => panic!("container create in a stopped pod: {other:?}"),
    }
    assert!(t.rt.pod_status(&id).await?.containers.is_empty());

    t.rt.delete_pod(&id).await?;
    assert!(ids(&t).await?.is_empty());
    match t.rt.pod_status(&id).await {
        Err(RuntimeError::Store(StoreError::PodNotFound(_))) => {}
        other => panic!("status of a deleted pod: {other:?}"),
    }
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_verb_and_wrong_container_transitions() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("ctr").id;
    t.rt.create_pod(t.pod("ctr")).await?;
    t.rt.start_pod(&pod).await?;

    // Killed with SIGTERM, which it traps.
    let term = cid("term");
    let created =
        t.rt.create_container(
            &pod,
            t.container(
                "term",
                &[
                    "/bin/sh",
                    "-c",
                    "trap 'exit 3' TERM; while true; do sleep 1; done",
                ],
            ),
        )
        .await?;
    assert_eq!(created.state, State::Ready);
    assert_eq!(created.pid, None);
    match t
        .rt
        .create_container(&pod, t.container("term", &["/bin/true"]))
        .await
    {
        Err(RuntimeError::ContainerExists { container, .. }) => assert_eq!(container, term),
        other => panic!("duplicate container id: {other:?}"),
    }
    assert_refused(
        t.rt.kill_container(&pod, &term, 15, false).await,
        "stop",
        State::Ready,
    );

    let started = t.rt.start_container(&pod, &term).await?;
    assert_eq!(started.state, State::Running);
    assert!(started.pid.is_some(), "{started:?}");
    let status = t.rt.container_status(&pod, &term).await?;
    assert_eq!(status.state, State::Running);
    assert_eq!(status.pid, started.pid);
    assert_eq!(status.exit_code, None);

    assert_refused(
        t.rt.start_container(&pod, &term).await,
        "start",
        State::Running,
    );
    assert_refused(
        t.rt.delete_container(&pod, &term).await,
        "delete",
        State::Running,
    );
    assert_eq!(
        t.rt.container_status(&pod, &term).await?.state,
        State::Running
    );

    // A wait in flight sees the exit. The shell is PID 1 of its pid namespace:
    // until it has installed its trap, the kernel discards SIGTERM, so send it
    // until the container exits.
    let waiter = tokio::spawn({
        let rt = t.rt.clone();
        let (pod, term) = (pod.clone(), term.clone());
        async move { rt.wait_container(&pod, &term).await }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiter.is_finished() {
        assert!(
            Instant::now() < deadline,
            "SIGTERM never ended the container"
        );
        t.rt.kill_container(&pod, &term, Signal::SIGTERM as i32, false)
            .await?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let code = waiter.await??;
    assert_eq!(code, 3, "the TERM trap's exit code");
    let status = t.rt.container_status(&pod, &term).await?;
    assert_eq!(status.state, State::Stopped);
    assert_eq!(status.exit_code, Some(3));
    t.rt.kill_container(&pod, &term, Signal::SIGTERM as i32, false)
        .await
        .context("killing a stopped container is not an error")?;
    assert_refused(
        t.rt.stop_container(&pod, &term, Duration::from_secs(1))
            .await,
        "stop",
        State::Stopped,
    );
    assert_refused(
        t.rt.start_container(&pod, &term).await,
        "start",
        State::Stopped,
    );
    t.rt.delete_container(&pod, &term).await?;

    // Ignores SIGTERM (ignored dispositions survive exec): stop ends it with SIGKILL.
    let stubborn = cid("stubborn");
    t.rt.create_container(
        &pod,
        t.container(
            "stubborn",
            &[
                "/bin/sh",
                "-c",
                "trap '' TERM; while true; do sleep 1; done",
            ],
        ),
    )
    .await?;
    t.rt.start_container(&pod, &stubborn).await?;
    let begun = Instant::now();
    let stopped =
        t.rt.stop_container(&pod, &stubborn, Duration::from_secs(1))
            .await?;
    assert_eq!(stopped.state, State::Stopped);
    assert_eq!(stopped.exit_code, Some(137), "{stopped:?}");
    assert!(
        begun.elapsed() >= Duration::from_secs(1),
        "SIGKILL before the grace period: {:?}",
        begun.elapsed()
    );
    assert_eq!(
        t.rt.wait_container(&pod, &stubborn).await?,
        137,
        "wait on a stopped container gives its code"
    );
    t.rt.delete_container(&pod, &stubborn).await?;

    // Exits by itself.
    let seven = cid("seven");
    t.rt.create_container(&pod, t.container("seven", &["/bin/sh", "-c", "exit 7"]))
        .await?;
    t.rt.start_container(&pod, &seven).await?;
    let status = wait_stopped(&t, &pod, &seven).await?;
    assert_eq!(status.exit_code, Some(7), "{status:?}");
    let in_pod = t.rt.pod_status(&pod).await?;
    let listed = in_pod
        .containers
        .iter()
        .find(|c| c.id == seven)
        .with_context(|| format!("container not in pod status: {in_pod:?}"))?;
    assert_eq!(listed.state, State::Stopped);
    t.rt.delete_container(&pod, &seven).await?;

    match t.rt.container_status(&pod, &seven).await {
        Err(RuntimeError::ContainerNotFound { .. }) => {}
        other => panic!("status of a deleted container: {other:?}"),
    }
    assert!(t.rt.pod_status(&pod).await?.containers.is_empty());

    let helpers = pids(&t.rt.pod_status(&pod).await?);
    t.rt.stop_pod(&pod).await?;
    assert!(wait_pids_gone(&helpers, Duration::from_secs(5)));
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_duplicate_ids_create_nothing() -> Result<()> {
    let t = TestRuntime::new()?;
    for bad in ["a/b", "", "..", ".", "-x", &"x".repeat(300)] {
        assert!(PodId::new(bad).is_err(), "pod id {bad:?} accepted");
        assert!(
            ContainerId::new(bad).is_err(),
            "container id {bad:?} accepted"
        );
    }
    let err = PodId::new("a/b").expect_err("invalid");
    assert!(err.to_string().contains("\"a/b\""), "{err}");

    let id = t.pod("dup").id;
    t.rt.create_pod(t.pod("dup")).await?;
    let before = ids(&t).await?;
    assert_eq!(before, ["dup"]);
    let dirs_before = t.leftover_pods();
    match t.rt.create_pod(t.pod("dup")).await {
        Err(RuntimeError::Store(StoreError::PodExists(p))) => assert_eq!(p, id),
        other => panic!("duplicate pod id: {other:?}"),
    }
    assert_eq!(ids(&t).await?, before);
    assert_eq!(t.leftover_pods(), dirs_before);
    assert_eq!(t.rt.pod_status(&id).await?.state, State::Ready);

    // Containers of a ready pod are recorded until the pod starts.
    t.rt.create_container(&id, t.container("c", &["/bin/true"]))
        .await?;
    match t
        .rt
        .create_container(&id, t.container("c", &["/bin/false"]))
        .await
    {
        Err(RuntimeError::ContainerExists { container, .. }) => assert_eq!(container, cid("c")),
        other => panic!("duplicate container id: {other:?}"),
    }
    let status = t.rt.pod_status(&id).await?;
    assert_eq!(status.containers.len(), 1, "{:?}", status.containers);
    assert_eq!(status.containers[0].config.command, ["/bin/true"]);

    t.rt.delete_pod(&id).await?;
    assert!(ids(&t).await?.is_empty());
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_with_killed_qemu_is_broken_and_cleaned_up() -> Result<()> {
    let t = TestRuntime::new()?;
    let id = t.pod("dead").id;
    t.rt.create_pod(t.pod("dead")).await?;
    let status = t.rt.start_pod(&id).await?;
    let helpers = pids(&status);
    let qemu = status
        .processes
        .iter()
        .find(|p| p.name == "qemu")
        .context("a qemu process")?
        .pid;
    let c = cid("sleeper");
    t.rt.create_container(
        &id,
        t.container("sleeper", &["/bin/sh", "-c", "sleep 1000"]),
    )
    .await?;
    t.rt.start_container(&id, &c).await?;

    kill(Pid::from_raw(qemu), Signal::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while t.rt.pod_status(&id).await?.state != State::Broken {
        assert!(Instant::now() < deadline, "pod not reported broken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = t.rt.pod_status(&id).await?;
    let death = status.broken.context("a broken pod says why")?;
    assert_eq!((death.helper.as_str(), death.pid), ("qemu", qemu));
    // Only processes still alive are listed; QEMU is not.
    assert!(
        status.processes.iter().all(|p| p.name != "qemu"),
        "{:?}",
        status.processes
    );
    let container = t.rt.container_status(&id, &c).await?;
    assert_eq!(container.state, State::Stopped);
    assert_eq!(container.exit_code, Some(vc_proto::EXIT_CODE_VM_GONE));

    let stopped = t.rt.stop_pod(&id).await?;
    assert_eq!(stopped.state, State::Stopped);
    assert!(
        wait_pids_gone(&helpers, Duration::from_secs(5)),
        "helpers left after stop: {helpers:?}"
    );
    t.rt.delete_pod(&id).await?;
    assert!(ids(&t).await?.is_empty());
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}
