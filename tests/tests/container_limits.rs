//! Containers inside real pod VMs: cgroup limits enforced, identity (hostname,
//! env, cwd, uid) as configured, isolation from the agent and from each other,
//! two pods with two containers each at once, and nothing left after delete.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use support::pod::{wait_pids_gone, TestRuntime};
use vc_host::config::{ContainerConfig, UserConfig};
use vc_host::id::PodId;
use vc_host::state::State;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_pids_limits_are_enforced() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("limits").id;
    t.rt.run_pod(t.pod("limits")).await?;

    // A shell variable of 32 MiB in a container limited to 16 MiB: OOM-killed.
    // (64 MiB took the unlimited shell about 2 minutes under TCG, the bound
    // of `output`.)
    let mut hog = t.container(
        "hog",
        &[
            "/bin/sh",
            "-c",
            "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ],
    );
    hog.resources.memory_limit_bytes = Some(16 * 1024 * 1024);
    let out = t.run_container(&pod, hog).await?;
    assert_ne!(out.exit_code, 0, "stdout: {}", text(&out.stdout));
    assert!(!text(&out.stdout).contains("survived"));
    let status = t.rt.container_status(&pod, &"hog".parse()?).await?;
    assert_eq!(status.state, State::Stopped);
    assert!(
        status.oom_killed,
        "the container reports the OOM kill: {status:?}"
    );

    // The same allocation without a limit succeeds: the limit is what killed it.
    let free = t.container(
        "free",
        &[
            "/bin/sh",
            "-c",
            "x=$(head -c 33554432 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ],
    );
    let out = t.run_container(&pod, free).await?;
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "survived 33554432");

    // At most 4 processes: a shell that starts 10 background sleeps fails to fork.
    let mut forker = t.container(
        "forker",
        &[
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do sleep 2 & done; wait; echo waited",
        ],
    );
    forker.resources.pids_limit = Some(4);
    let out = t.run_container(&pod, forker).await?;
    assert!(
        text(&out.stderr).contains("fork"),
        "fork refused by the pids limit; stderr: {}",
        text(&out.stderr)
    );

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

/// A private copy of the busybox rootfs with a marker file naming its owner.
fn rootfs_copy(src: &Path, dst: &Path, marker: &str) -> Result<PathBuf> {
    let dst = support::rootfs_copy(src, dst)?;
    std::fs::write(dst.join(marker), marker)?;
    Ok(dst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_with_two_containers_each_identity_and_isolation() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let pods: Vec<PodId> = ["duo-a", "duo-b"].iter().map(|p| t.pod(p).id).collect();
    for pod in &pods {
        t.rt.create_pod(vc_host::config::PodConfig::new(pod.clone()))
            .await?;
    }
    let started = futures::future::join_all(pods.iter().map(|p| t.rt.start_pod(p))).await;
    let mut helpers = Vec::new();
    for s in started {
        let s = s?;
        assert_eq!(s.state, State::Running);
        helpers.extend(s.processes.iter().map(|p| p.pid));
    }

    for pod in &pods {
        for (n, uid) in [("c1", 1000u32), ("c2", 0)] {
            let me = format!("{pod}-{n}");
            let other = format!("{pod}-{}", if n == "c1" { "c2" } else { "c1" });
            let rootfs = rootfs_copy(&t.rootfs, &scratch.path().join(&me), &me)?;
            let script = format!(
                "echo host=$(hostname) foo=$FOO cwd=$(pwd) uid=$(id -u) gid=$(id -g) pid=$$; \
                 test -e /{me} && echo own-marker; \
                 test -e /{other} && echo LEAK-other-container; \
                 test -e /init && echo LEAK-agent-init; \
                 test -e /run/vc/shared && echo LEAK-agent-share; \
                 echo procs=$(ls -d /proc/[0-9]* | wc -l)"
            );
            let mut c = ContainerConfig::new(
                n.parse()?,
                rootfs,
                vec!["/bin/sh".into(), "-c".into(), script],
            );
            c.env = vec!["FOO=bar-".to_owned() + &me];
            c.cwd = "/tmp".into();
            c.hostname = Some(format!("h-{me}"));
            c.user = UserConfig {
                uid,
                gid: uid,
                additional_gids: vec![],
            };
            let out = t.run_container(pod, c).await?;
            let stdout = text(&out.stdout);
            assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
            assert!(
                stdout.contains(&format!(
                    "host=h-{me} foo=bar-{me} cwd=/tmp uid={uid} gid={uid} pid=1"
                )),
                "{stdout}"
            );
            assert!(stdout.contains("own-marker"), "{stdout}");
            assert!(!stdout.contains("LEAK"), "{stdout}");
            // The shell, its ls and wc: nothing of the VM or other containers.
            let procs: u32 = stdout
                .lines()
                .find_map(|l| l.strip_prefix("procs="))
                .context("procs line")?
                .trim()
                .parse()?;
            assert!(procs <= 4, "the container sees {procs} processes: {stdout}");
        }
    }

    for pod in &pods {
        t.rt.stop_pod(pod).await?;
        t.rt.delete_pod(pod).await?;
    }
    assert!(
        wait_pids_gone(&helpers, Duration::from_secs(5)),
        "{helpers:?}"
    );
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    // The rootfs copies are untouched by delete, and no longer mounted anywhere.
    assert!(scratch.path().join("duo-a-c1/duo-a-c1").exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_environment_readonly_rootfs_devices_groups_and_privileges() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("env").id;
    t.rt.run_pod(t.pod("env")).await?;
    let script = "touch /rootfs-write 2>/dev/null && echo rootfs-writable; \
                  touch /sys/x 2>/dev/null && echo sys-writable; \
                  for d in null zero full random urandom tty ptmx; do test -c /dev/$d || echo missing-$d; done; \
                  test -d /dev/pts || echo missing-pts; test -d /dev/shm || echo missing-shm; \
                  echo groups=$(id -G); \
                  grep -E '^(NoNewPrivs|CapBnd|CapEff):' /proc/self/status";
    let mut c = t.container("env", &["/bin/sh", "-c", script]);
    c.readonly_rootfs = true;
    c.user = UserConfig {
        uid: 0,
        gid: 0,
        additional_gids: vec![10, 20],
    };
    let out = t.run_container(&pod, c).await?;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert!(!stdout.contains("writable"), "{stdout}");
    assert!(!stdout.contains("missing"), "{stdout}");
    assert!(stdout.contains("groups=0 10 20"), "{stdout}");
    assert!(stdout.contains("NoNewPrivs:\t1"), "{stdout}");
    // The default capability set (Docker's), not the full set.
    assert!(stdout.contains("CapBnd:\t00000000a80425fb"), "{stdout}");
    assert!(stdout.contains("CapEff:\t00000000a80425fb"), "{stdout}");
    assert!(!t.rootfs.join("rootfs-write").exists());

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty());
    Ok(())
}
