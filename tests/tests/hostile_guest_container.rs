//! Container isolation inside a real pod VM, at least runc's defaults: masked
//! paths (`/proc/kcore`, `/proc/keys`, ...), read-only paths (a container
//! cannot change the guest's `core_pattern`), the cgroup device allow-list (no
//! block device node, no character device outside the list, while `/dev/null`,
//! `/dev/zero`, `/dev/urandom`, `/dev/ptmx` and a terminal still work), `/dev`
//! mounted `nosuid,noexec`, and read-only meaning read-only below: a read-only
//! rootfs and a read-only volume, each with a mount inside it. Below the
//! containers, the guest kernel is locked down (`VmConfig::guest_lockdown`):
//! even root in the VM, outside any container, cannot read `/dev/mem`.

mod support;

use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use support::pod::TestRuntime;
use vc_host::agent::Output;
use vc_host::config::VolumeConfig;
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::share::{guest_rootfs_path, guest_volume_path};
use vc_host::runtime::ProcessConfig;

const SHORT: Duration = Duration::from_secs(120);

/// What the container sees; one `key=value` line per check.
const PROBE: &str = r#"
echo kcore=$(cat /proc/kcore | wc -c)
echo keys=$(cat /proc/keys | wc -c)
for p in /proc/acpi /proc/asound /proc/kcore /proc/keys /proc/latency_stats \
    /proc/timer_list /proc/timer_stats /proc/sched_debug /proc/scsi /sys/firmware \
    /sys/devices/virtual/powercap; do
  if grep -q " $p " /proc/self/mountinfo; then echo "masked=$p"
  elif [ -e $p ]; then echo "unmasked=$p"; fi
done
echo firmware=$(ls -A /sys/firmware | wc -l)
(echo '|/bin/evil' > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core=written || echo core=refused
mknod /dev/shm/blk b 254 0 2>/dev/null && echo blk=made || echo blk=refused
mknod /dev/shm/mem c 1 1 2>/dev/null && echo mem=made || echo mem=refused
mknod /dev/shm/null c 1 3 2>/dev/null && echo null-node=made || echo null-node=refused
echo zero=$(head -c 4 /dev/zero | wc -c)
echo urandom=$(head -c 8 /dev/urandom | wc -c)
echo x > /dev/null && echo null=ok
(exec 3<>/dev/ptmx) 2>/dev/null && echo ptmx=ok || echo ptmx=refused
grep ' /dev ' /proc/self/mountinfo | awk '{print "dev-options=" $6}'
grep ' /proc/sys ' /proc/self/mountinfo | awk '{print "proc-sys-options=" $6}'
"#;

/// Writes below the read-only root and volume, and to mounts of its own.
const READ_ONLY_PROBE: &str = r#"
for p in /etc /tmp /root /root/sub /dev/shm; do
  touch $p/probe 2>/dev/null && echo "$p=rw" || echo "$p=ro"
done
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn has_line(out: &str, want: &str) -> bool {
    out.lines().any(|l| l == want)
}

/// Runs busybox `args` in the VM, outside any container, through the share
/// path of container `via`'s rootfs (the initramfs has no tools).
async fn in_vm(t: &TestRuntime, pod: &PodId, via: &ContainerId, args: &[&str]) -> Result<Output> {
    let mut command = vec![format!("{}/bin/busybox", guest_rootfs_path(via))];
    command.extend(args.iter().map(|a| a.to_string()));
    let out = tokio::time::timeout(SHORT, t.rt.enter_pod(pod, command))
        .await
        .context("enter_pod timed out")??;
    ensure!(
        out.exit_code == 0,
        "{args:?} in the VM exited {}: {}{}",
        out.exit_code,
        text(&out.stdout),
        text(&out.stderr)
    );
    Ok(out)
}

async fn exec(
    t: &TestRuntime,
    pod: &PodId,
    c: &ContainerId,
    config: ProcessConfig,
) -> Result<Output> {
    let p = t.rt.exec_process(pod, c, config).await?;
    Ok(tokio::time::timeout(SHORT, p.output())
        .await
        .context("the process did not finish")??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_get_masks_read_only_paths_a_device_list_and_recursive_read_only() -> Result<()>
{
    let t = TestRuntime::new()?;
    let pod: PodId = "harden".parse()?;
    let c: ContainerId = "c".parse()?;
    let mut config = t.pod("harden");
    config
        .containers
        .push(t.container("c", &["sleep", "1000000"]));
    t.rt.run_pod(config).await?;

    let core_pattern = || in_vm(&t, &pod, &c, &["cat", "/proc/sys/kernel/core_pattern"]);
    let before = text(&core_pattern().await?.stdout);

    let out = exec(&t, &pod, &c, ProcessConfig::new(["sh", "-c", PROBE])).await?;
    let probe = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{probe}\n{}", text(&out.stderr));
    for want in [
        "kcore=0",
        "keys=0",
        "masked=/proc/kcore",
        "masked=/proc/keys",
        "masked=/sys/firmware",
        "firmware=0",
        "core=refused",
        "blk=refused",
        "mem=refused",
        "null-node=made",
        "zero=4",
        "urandom=8",
        "null=ok",
        "ptmx=ok",
    ] {
        assert!(has_line(&probe, want), "missing {want:?} in:\n{probe}");
    }
    assert!(
        !probe.contains("unmasked="),
        "every default masked path that exists is masked:\n{probe}"
    );
    let options = |key: &str| {
        probe
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|o| o.split(',').map(str::to_owned).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let dev = options("dev-options=");
    assert!(
        dev.iter().any(|o| o == "nosuid") && dev.iter().any(|o| o == "noexec"),
        "/dev is nosuid,noexec: {dev:?}"
    );
    assert!(
        options("proc-sys-options=").iter().any(|o| o == "ro"),
        "/proc/sys is read-only:\n{probe}"
    );
    let after = text(&core_pattern().await?.stdout);
    assert_eq!(before, after, "the guest's core_pattern is unchanged");
    assert!(!after.contains("evil"));

    // The guest kernel is locked down: root in the VM, with every capability
    // and outside any container, is refused /dev/mem (a locked-down kernel
    // refuses the open; an open kernel lets root read its first page).
    let busybox = format!("{}/bin/busybox", guest_rootfs_path(&c));
    let devmem = in_vm(
        &t,
        &pod,
        &c,
        &[
            "sh",
            "-c",
            &format!(
                "[ -c /dev/mem ] && echo devmem-node=present; \
                 {busybox} head -c 1 /dev/mem > /dev/null 2>&1 && echo devmem=read || \
                 echo devmem=refused; {busybox} cat /proc/cmdline"
            ),
        ],
    )
    .await?;
    let devmem = text(&devmem.stdout);
    assert!(has_line(&devmem, "devmem-node=present"), "{devmem}");
    assert!(has_line(&devmem, "devmem=refused"), "{devmem}");
    assert!(devmem.contains(" lockdown=confidentiality "), "{devmem}");

    // A terminal still works: /dev/tty (5:0) opens and is the process's own.
    let out = exec(
        &t,
        &pod,
        &c,
        ProcessConfig::new([
            "sh",
            "-c",
            "echo via-dev-tty > /dev/tty && [ -t 0 ] && echo stdin-is-a-tty",
        ])
        .terminal(true),
    )
    .await?;
    let tty = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{tty}");
    for want in ["via-dev-tty", "stdin-is-a-tty"] {
        assert!(
            tty.contains(want),
            "missing {want:?} on the terminal: {tty:?}"
        );
    }

    // Read-only below: a read-only rootfs and a read-only volume, each with a
    // tmpfs mounted inside it in the VM before the container starts.
    let host = tempfile::tempdir()?;
    let vol = host.path().join("vol");
    std::fs::create_dir_all(vol.join("sub"))?;
    let ro: ContainerId = "ro".parse()?;
    let mut config = t.container("ro", &["sh", "-c", READ_ONLY_PROBE]);
    config.readonly_rootfs = true;
    config.volumes = vec![VolumeConfig {
        host_path: vol.clone(),
        // A directory the rootfs has (the host would make a missing one
        // before binding the read-only rootfs).
        container_path: "/root".to_owned(),
        readonly: true,
    }];
    t.rt.create_container(&pod, config).await?;
    // The agent's root mount of the container (see docs/containers.md) and
    // the volume's path in the share.
    let root_tmp = "/run/vc/containers/ro/root/tmp".to_owned();
    let vol_sub = format!("{}/sub", guest_volume_path(&ro, 0));
    for target in [&root_tmp, &vol_sub] {
        in_vm(
            &t,
            &pod,
            &c,
            &["mount", "-t", "tmpfs", "tmpfs", target.as_str()],
        )
        .await?;
    }
    t.rt.start_container(&pod, &ro).await?;
    let agent = t.rt.pod_agent(&pod).await?;
    let main = vc_proto::ProcessRef {
        container_id: "ro".to_owned(),
        exec_id: None,
    };
    let out = tokio::time::timeout(SHORT, vc_host::agent::collect_output(&agent, &main))
        .await
        .context("the read-only container did not finish")??;
    let probe = text(&out.stdout);
    for want in [
        "/etc=ro",
        "/tmp=ro",
        "/root=ro",
        "/root/sub=ro",
        "/dev/shm=rw",
    ] {
        assert!(has_line(&probe, want), "missing {want:?} in:\n{probe}");
    }
    assert!(
        !vol.join("sub/probe").exists() && !vol.join("probe").exists(),
        "nothing written to the read-only volume on the host"
    );
    in_vm(&t, &pod, &c, &["umount", vol_sub.as_str()]).await?;
    t.rt.delete_container(&pod, &ro).await?;

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}
