//! The pod's host processes run confined (issue 11, item 3), in a real pod:
//! QEMU as the unprivileged VMM user under its seccomp sandbox,
//! vhost-device-vsock unprivileged, virtiofsd in namespaces of its own (or
//! chrooted into the share, where the share is not a shared mount point) and
//! without `CAP_MKNOD`; a device node that guest root makes on the share is
//! refused (a FIFO still works); the run directory and the logs are root's
//! alone; and the pod works confined (exec, a read-write volume both ways).

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use support::pod::TestRuntime;
use vc_host::config::VolumeConfig;
use vc_host::hypervisor::daemons::is_shared_mount_point;
use vc_host::hypervisor::{VmmUser, DEFAULT_VMM_USER};
use vc_host::runtime::share::{guest_rootfs_path, guest_volume_path};
use vc_host::runtime::ProcessConfig;

/// `CAP_MKNOD` and `CAP_SETFCAP`, as bits of a capability mask.
const CAP_MKNOD: u32 = 27;
const CAP_SETFCAP: u32 = 31;

/// The value of `key` in `/proc/<pid>/status`.
fn status_field(pid: i32, key: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read the status of pid {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("pid {pid} has no {key} in its status"))
}

/// Real, effective, saved and filesystem uids of `pid`.
fn uids(pid: i32) -> Result<Vec<u32>> {
    status_field(pid, "Uid")?
        .split_whitespace()
        .map(|u| u.parse().context("a uid"))
        .collect()
}

fn mount_ns(pid: &str) -> Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).context("a mount namespace link")
}

/// Pids whose parent is `parent`.
fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .ok()
                        .and_then(|s| {
                            let after = s.rsplit_once(") ")?.1.to_owned();
                            after.split_whitespace().nth(1)?.parse::<i32>().ok()
                        })
                        == Some(parent)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helpers_run_confined_and_a_guest_device_node_is_refused() -> Result<()> {
    let t = TestRuntime::new()?;
    let user = VmmUser::lookup(DEFAULT_VMM_USER)?;
    let host = tempfile::tempdir()?;
    let vol = host.path().join("vol");
    std::fs::create_dir(&vol)?;
    std::fs::write(vol.join("from-host"), "hello from the host\n")?;

    let pod = t.pod("confined").id;
    t.rt.run_pod(t.pod("confined")).await?;
    let mut c = t.container("c1", &["/bin/sleep", "600"]);
    c.volumes = vec![VolumeConfig {
        host_path: vol.clone(),
        container_path: "/data".to_owned(),
        readonly: false,
    }];
    t.rt.create_container(&pod, c).await?;
    let cid = "c1".parse()?;
    t.rt.start_container(&pod, &cid).await?;

    // The helpers, as the pod reports them.
    let status = t.rt.pod_status(&pod).await?;
    let pid_of = |name: &str| {
        status
            .processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.pid)
            .with_context(|| format!("no {name} in {:?}", status.processes))
    };
    let qemu = pid_of("qemu")?;
    let vsock = pid_of("vhost-device-vsock")?;
    let virtiofsd = pid_of("virtiofsd")?;

    // QEMU: the VMM user, seccomp filter on, no way back to privileges.
    let qemu_uids = uids(qemu)?;
    eprintln!(
        "QEMU pid {qemu}: Uid {qemu_uids:?}, Groups {:?}, Seccomp {}, NoNewPrivs {}, CapEff {}",
        status_field(qemu, "Groups")?,
        status_field(qemu, "Seccomp")?,
        status_field(qemu, "NoNewPrivs")?,
        status_field(qemu, "CapEff")?
    );
    ensure!(
        qemu_uids.iter().all(|&u| u == user.uid && u != 0),
        "QEMU runs as {qemu_uids:?}, not {} ({})",
        user.uid,
        user.name
    );
    ensure!(status_field(qemu, "Seccomp")? == "2", "QEMU has a filter");
    ensure!(status_field(qemu, "NoNewPrivs")? == "1");
    ensure!(
        status_field(qemu, "CapEff")? == "0000000000000000",
        "QEMU holds no capability"
    );
    // It was handed descriptors: no file of the run directory is open by
    // a path it resolved, and it has its kernel by descriptor.
    let cmdline = text(&std::fs::read(format!("/proc/{qemu}/cmdline"))?).replace('\0', " ");
    ensure!(
        !cmdline.contains(&t.root().display().to_string()),
        "QEMU's command line names no path under the runtime root: {cmdline}"
    );

    // vhost-device-vsock: the VMM user too.
    let vsock_uids = uids(vsock)?;
    ensure!(
        vsock_uids.iter().all(|&u| u == user.uid),
        "vhost-device-vsock runs as {vsock_uids:?}"
    );
    ensure!(status_field(vsock, "NoNewPrivs")? == "1");

    // virtiofsd is confined to the share. Where the share is a shared mount
    // point (binds reach a private namespace), it is not in the host's mount
    // namespace and serves from a child (pid 1 of its own pid namespace);
    // elsewhere it chroots into the share. Either way the serving process
    // lacks mknod and setfcap.
    let share = std::fs::canonicalize(t.root().join("pods").join(pod.as_str()).join("shared"))?;
    let mounts = vc_host::mountinfo::read()?;
    let servers = if is_shared_mount_point(&mounts, &share) {
        let host_ns = mount_ns("self")?;
        ensure!(
            mount_ns(&virtiofsd.to_string())? != host_ns,
            "virtiofsd (pid {virtiofsd}) is in the host's mount namespace"
        );
        let servers = children(virtiofsd);
        ensure!(
            !servers.is_empty(),
            "virtiofsd {virtiofsd} has no serving child"
        );
        for s in &servers {
            ensure!(mount_ns(&s.to_string())? != host_ns);
        }
        eprintln!("virtiofsd: namespace sandbox, serving pids {servers:?}");
        servers
    } else {
        let root = std::fs::read_link(format!("/proc/{virtiofsd}/root"))?;
        ensure!(
            root == share,
            "virtiofsd's root is {}, not the share {}",
            root.display(),
            share.display()
        );
        eprintln!("virtiofsd: chroot sandbox (the share is not a shared mount point)");
        vec![virtiofsd]
    };
    for s in &servers {
        let cap_eff = u64::from_str_radix(&status_field(*s, "CapEff")?, 16)?;
        eprintln!(
            "virtiofsd serving pid {s}: CapEff {cap_eff:#018x} ({}), Seccomp {}",
            cap_names(cap_eff),
            status_field(*s, "Seccomp")?
        );
        ensure!(cap_eff & (1 << CAP_MKNOD) == 0, "virtiofsd keeps mknod");
        ensure!(cap_eff & (1 << CAP_SETFCAP) == 0, "virtiofsd keeps setfcap");
    }

    // Guest root, outside any container, on the volume in the share: a block
    // or character device node is refused by virtiofsd, a FIFO is not.
    let dir = guest_volume_path(&cid, 0);
    let script = format!(
        "mknod -m 666 {dir}/blk b 8 0; echo blk=$?; \
         mknod -m 666 {dir}/chr c 1 3; echo chr=$?; \
         mknod {dir}/fifo p; echo fifo=$?"
    );
    // The VM itself has no shell: the container's static busybox serves.
    let busybox = format!("{}/bin/busybox", guest_rootfs_path(&cid));
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        t.rt.enter_pod(&pod, vec![busybox, "sh".into(), "-c".into(), script]),
    )
    .await
    .context("mknod in the VM did not end within 2 minutes")??;
    let said = text(&out.stdout);
    eprintln!("guest mknod: {said}{}", text(&out.stderr));
    ensure!(said.contains("fifo=0"), "a FIFO can be made: {said}");
    ensure!(!said.contains("blk=0"), "a block device was made: {said}");
    ensure!(!said.contains("chr=0"), "a char device was made: {said}");
    ensure!(!vol.join("blk").exists() && !vol.join("chr").exists());
    ensure!(std::fs::symlink_metadata(vol.join("fifo"))?
        .file_type()
        .is_fifo());

    // The pod works confined: exec in the container, the volume both ways.
    let exec =
        t.rt.exec_process(
            &pod,
            &cid,
            ProcessConfig::new([
                "/bin/sh",
                "-c",
                "cat /data/from-host && echo written-in-guest > /data/from-guest",
            ]),
        )
        .await?;
    let out = tokio::time::timeout(Duration::from_secs(60), exec.output())
        .await
        .context("exec did not finish")??;
    ensure!(out.exit_code == 0, "exec: {}", text(&out.stderr));
    ensure!(text(&out.stdout) == "hello from the host\n");
    ensure!(std::fs::read_to_string(vol.join("from-guest"))? == "written-in-guest\n");

    // Nobody but root reaches what the guest writes.
    let vm_dir = t.root().join("pods").join(pod.as_str()).join("vm");
    check_private(&vm_dir)?;

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    Ok(())
}

/// The run directory is root's and 0700; its logs are 0600; the vsock
/// daemon's own directory is the VMM user's and 0700.
fn check_private(vm_dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(vm_dir)?;
    ensure!(meta.uid() == 0, "{} is not root's", vm_dir.display());
    ensure!(
        meta.permissions().mode() & 0o777 == 0o700,
        "{} is {:o}",
        vm_dir.display(),
        meta.permissions().mode()
    );
    let mut logs = 0;
    for e in std::fs::read_dir(vm_dir)? {
        let e = e?;
        let meta = std::fs::symlink_metadata(e.path())?;
        let mode = meta.permissions().mode() & 0o777;
        if e.file_name().to_string_lossy().ends_with(".log") {
            logs += 1;
            ensure!(mode == 0o600, "{} is {mode:o}", e.path().display());
        } else if meta.is_dir() {
            ensure!(mode == 0o700, "{} is {mode:o}", e.path().display());
        }
    }
    if logs < 3 {
        bail!(
            "expected the console, QEMU and daemon logs in {}",
            vm_dir.display()
        );
    }
    Ok(())
}

/// Names of the capabilities in `mask` that matter for a file server.
fn cap_names(mask: u64) -> String {
    const NAMES: [(u32, &str); 10] = [
        (0, "chown"),
        (1, "dac_override"),
        (2, "dac_read_search"),
        (3, "fowner"),
        (4, "fsetid"),
        (6, "setgid"),
        (7, "setuid"),
        (21, "sys_admin"),
        (CAP_MKNOD, "mknod"),
        (CAP_SETFCAP, "setfcap"),
    ];
    let known: u64 = NAMES.iter().map(|(b, _)| 1u64 << b).sum();
    let mut names: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| mask & (1 << b) != 0)
        .map(|(_, n)| (*n).to_owned())
        .collect();
    if mask & !known != 0 {
        names.push(format!("others {:#x}", mask & !known));
    }
    names.join(",")
}
