//! A hostile guest against the host's resources: a guest that floods its
//! serial console leaves the host's console file bounded and its escape
//! sequences escaped wherever the host shows it; QEMU and every helper run
//! in the pod's host cgroup with its limits; the cgroup is gone after stop
//! and delete, and after a start that failed.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use support::pod::TestRuntime;
use support::poll_until;
use vc_host::hypervisor::console::{console_files, rotated_path};
use vc_host::hypervisor::{CgroupRecord, CgroupVersion, HypervisorError};
use vc_host::id::ContainerId;
use vc_host::runtime::share::guest_rootfs_path;
use vc_host::runtime::{PodStatus, RuntimeError};

/// Bytes the guest writes to its console: twelve times what the host keeps.
/// (A guest's serial console runs at about 60 KB/s under TCG here, so this
/// takes about a minute.)
const FLOOD_BYTES: u64 = 3 << 20;

/// What the host keeps of the console in this test.
const CONSOLE_MAX: u64 = 256 << 10;

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .trim()
        .to_owned())
}

/// Every pid listed in the cgroup directories' `cgroup.procs`.
fn cgroup_pids(cgroup: &CgroupRecord) -> Result<Vec<Vec<i32>>> {
    cgroup
        .dirs
        .iter()
        .map(|d| {
            Ok(read_trimmed(&d.join("cgroup.procs"))?
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect())
        })
        .collect()
}

/// The limit files of the cgroup and the values they must hold.
fn limit_files(cgroup: &CgroupRecord) -> Vec<(PathBuf, u64)> {
    let (memory, pids) = match cgroup.version {
        CgroupVersion::V1 => (
            cgroup.dirs[0].join("memory.limit_in_bytes"),
            cgroup.dirs[1].join("pids.max"),
        ),
        CgroupVersion::V2 => (
            cgroup.dirs[0].join("memory.max"),
            cgroup.dirs[0].join("pids.max"),
        ),
    };
    vec![
        (memory, cgroup.limits.memory_bytes),
        (pids, cgroup.limits.pids_max),
    ]
}

/// The pod's memory use now and at its peak, in MiB.
fn memory_use(cgroup: &CgroupRecord) -> (u64, u64) {
    let (now, peak) = match cgroup.version {
        CgroupVersion::V1 => (
            cgroup.dirs[0].join("memory.usage_in_bytes"),
            cgroup.dirs[0].join("memory.max_usage_in_bytes"),
        ),
        CgroupVersion::V2 => (
            cgroup.dirs[0].join("memory.current"),
            cgroup.dirs[0].join("memory.peak"),
        ),
    };
    let mib = |p: &Path| {
        read_trimmed(p)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            >> 20
    };
    (mib(&now), mib(&peak))
}

fn pids_current(cgroup: &CgroupRecord) -> String {
    let dir = match cgroup.version {
        CgroupVersion::V1 => &cgroup.dirs[1],
        CgroupVersion::V2 => &cgroup.dirs[0],
    };
    read_trimmed(&dir.join("pids.current")).unwrap_or_default()
}

/// Every host process of the pod is in every directory of its cgroup.
fn assert_in_cgroup(status: &PodStatus, cgroup: &CgroupRecord) -> Result<()> {
    let names: Vec<&str> = status.processes.iter().map(|p| p.name.as_str()).collect();
    for want in ["qemu", "vc-console-log", "vhost-device-vsock", "virtiofsd"] {
        ensure!(names.contains(&want), "{want} missing from {names:?}");
    }
    for (dir, pids) in cgroup.dirs.iter().zip(cgroup_pids(cgroup)?) {
        for p in &status.processes {
            ensure!(
                pids.contains(&p.pid),
                "{} (pid {}) is not in {}: {pids:?}",
                p.name,
                p.pid,
                dir.display()
            );
        }
    }
    for (file, want) in limit_files(cgroup) {
        let got = read_trimmed(&file)?;
        ensure!(
            got == want.to_string(),
            "{} holds {got}, not {want}",
            file.display()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_flood_stays_bounded_and_the_pod_lives_in_its_cgroup() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut config = t.pod("flood");
    config.vm.console_max_bytes = CONSOLE_MAX;
    let id = config.id.clone();
    let status = t.rt.run_pod(config).await?;
    let cgroup = status
        .host_cgroup
        .clone()
        .context("a running pod reports its host cgroup")?;
    assert_in_cgroup(&status, &cgroup)?;
    let (idle_now, idle_peak) = memory_use(&cgroup);
    eprintln!(
        "idle pod: {idle_now} MiB now, {idle_peak} MiB peak, {} tasks, limit {} MiB",
        pids_current(&cgroup),
        cgroup.limits.memory_bytes >> 20
    );

    // The initrd holds only the agent: borrow busybox from a container's
    // rootfs, which a created container has in the pod's share.
    t.rt.create_container(&id, t.container("tools", &["/bin/true"]))
        .await?;
    let busybox = format!(
        "{}/bin/busybox",
        guest_rootfs_path(&ContainerId::new("tools")?)
    );

    // The guest floods its console with a terminal escape sequence (a window
    // title and a screen clear) on every line.
    let console = status.console_log.clone().context("console path")?;
    let flood = format!(
        "b={busybox}; $b yes \"$(printf 'flood \\033]0;owned\\007\\033[2J\\r')\" | $b head -c {FLOOD_BYTES} > /dev/ttyS0; echo flood-end-$((6*7)) > /dev/ttyS0; echo done"
    );
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        t.rt.enter_pod(&id, vec![busybox.clone(), "sh".into(), "-c".into(), flood]),
    )
    .await
    .context("the flood did not end within 10 minutes")??;
    let took = started.elapsed();
    ensure!(
        out.exit_code == 0 && String::from_utf8_lossy(&out.stdout).trim() == "done",
        "flood: {out:?}"
    );
    eprintln!("flooded {} MiB in {took:?}", FLOOD_BYTES >> 20);

    // The logger has copied the end of the flood once the line written after
    // it (computed by the shell, so never in a command line the agent may
    // log) is in the files; the agent's own lines may follow, so then wait
    // for the console to stop growing. The files are then within the limit
    // and hold the newest text.
    // (The two files read as one: a rotation may split the line.)
    poll_until(
        "the line after the flood in the console files",
        Duration::from_secs(60),
        || async {
            let both: Vec<u8> = console_files(&console)
                .iter()
                .flat_map(|p| std::fs::read(p).unwrap_or_default())
                .collect();
            let text = String::from_utf8_lossy(&both);
            Ok(if text.contains("flood-end-42") {
                Ok(())
            } else {
                // The end, for the failure message.
                Err(text
                    .chars()
                    .skip(text.chars().count().saturating_sub(120))
                    .collect::<String>())
            })
        },
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = u64::MAX;
    loop {
        let total: u64 = console_files(&console)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        if total == last {
            break;
        }
        ensure!(Instant::now() < deadline, "the console kept growing");
        last = total;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let current = std::fs::metadata(&console)?.len();
    let old = std::fs::metadata(rotated_path(&console))?.len();
    ensure!(
        current <= CONSOLE_MAX / 2 && old <= CONSOLE_MAX / 2,
        "console files of {current} and {old} bytes pass half of {CONSOLE_MAX}"
    );
    ensure!(
        old == CONSOLE_MAX / 2,
        "a flood of {FLOOD_BYTES} bytes rotated the console: {old} bytes kept in the old file"
    );
    let kept = [
        std::fs::read(rotated_path(&console))?,
        std::fs::read(&console)?,
    ]
    .concat();
    ensure!(
        String::from_utf8_lossy(&kept).contains("flood \x1b]0;owned\x07"),
        "the raw console keeps the guest's bytes"
    );

    // Shown by the host, the escape sequences are spelled out.
    let tail = vc_host::hypervisor::vm::console_tail(&console, 20);
    ensure!(
        tail.contains("flood \\x1b]0;owned\\x07\\x1b[2J\\r"),
        "{tail}"
    );
    ensure!(
        !tail.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reach the terminal: {tail:?}"
    );

    // The pod still works, its helpers all alive and still in the cgroup.
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        t.rt.enter_pod(&id, vec![busybox.clone(), "echo".into(), "alive".into()]),
    )
    .await
    .context("echo alive in the VM did not end within 2 minutes")??;
    ensure!(
        String::from_utf8_lossy(&out.stdout).trim() == "alive",
        "{out:?}"
    );
    let status = t.rt.pod_status(&id).await?;
    assert_in_cgroup(&status, &cgroup)?;
    let (flood_now, flood_peak) = memory_use(&cgroup);
    eprintln!(
        "after the flood: {flood_now} MiB now, {flood_peak} MiB peak, {} tasks",
        pids_current(&cgroup)
    );

    // A busy guest touching most of its memory (a file in its RAM-backed
    // root, as large as the root allows) stays within the limit: QEMU is
    // not killed.
    let fill = format!(
        "b={busybox}; $b dd if=/dev/zero of=/fill bs=1M count=200 2>/dev/null; $b ls -l /fill; $b rm /fill && echo filled"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        t.rt.enter_pod(&id, vec![busybox.clone(), "sh".into(), "-c".into(), fill]),
    )
    .await
    .context("filling the guest's memory did not end within 10 minutes")??;
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("filled"),
        "{out:?}"
    );
    let status = t.rt.pod_status(&id).await?;
    assert_in_cgroup(&status, &cgroup)?;
    let (busy_now, busy_peak) = memory_use(&cgroup);
    eprintln!(
        "after filling guest memory ({}): {busy_now} MiB now, {busy_peak} MiB peak, {} tasks",
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .replace('\n', "; "),
        pids_current(&cgroup)
    );
    ensure!(
        busy_peak << 20 <= cgroup.limits.memory_bytes,
        "peak {busy_peak} MiB above the limit"
    );

    // Stop removes the cgroup, and delete leaves none.
    let stopped = t.rt.stop_pod(&id).await?;
    ensure!(stopped.host_cgroup.is_none(), "{stopped:?}");
    for dir in &cgroup.dirs {
        ensure!(!dir.exists(), "{} left after stop", dir.display());
    }
    ensure!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    t.rt.delete_pod(&id).await?;
    ensure!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    ensure!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_no_cgroup() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut config = t.pod("nostart");
    // A "QEMU" that exits at once: the launch fails after the cgroup, the
    // console logger and the daemons were set up.
    config.vm.binaries.qemu = Some("/bin/false".into());
    let id = config.id.clone();
    t.rt.create_pod(config).await?;
    let err = t.rt.start_pod(&id).await.expect_err("QEMU exits at once");
    ensure!(
        matches!(
            err,
            RuntimeError::Hypervisor(HypervisorError::QemuExited { .. })
        ),
        "{err:?}"
    );
    ensure!(
        t.leftover_cgroups().is_empty(),
        "{:?}",
        t.leftover_cgroups()
    );
    let status = t.rt.pod_status(&id).await?;
    ensure!(
        status.processes.is_empty() && status.host_cgroup.is_none(),
        "{status:?}"
    );
    t.rt.delete_pod(&id).await?;
    ensure!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}
