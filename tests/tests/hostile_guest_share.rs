//! A hostile guest against the pod's virtio-fs share, in real pod VMs.
//!
//! From `enter_pod` (guest root, outside every container) the guest plants
//! links and renames in `/run/vc/shared`: a directory link and a file link at
//! the share's root, nested links, a link named like a container, a bound
//! directory renamed away, device nodes and setuid bits, and links made between
//! a container's create and its delete. The host then creates, starts, stops
//! and deletes containers with a rootfs and with file and directory volumes.
//! Afterwards a canary tree outside the pod is unchanged, no mount exists
//! outside the pod directory that was not there before, the volumes' host data
//! is intact, and nothing is left after delete. A pod whose record was
//! corrupted while it ran is cleaned up by the forced delete.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use sha2::Digest as _;
use support::pod::{pid_gone, TestRuntime};
use support::rootfs_copy;
use vc_host::config::{ContainerConfig, VolumeConfig};
use vc_host::id::PodId;
use vc_host::runtime::share::guest_rootfs_path;

/// The guest's busybox, from the read-only `tools` container's rootfs (the
/// initrd holds only the agent).
fn busybox() -> String {
    format!(
        "{}/bin/busybox",
        guest_rootfs_path(&"tools".parse().expect("id"))
    )
}

/// Runs `script` as guest root outside any container, with `try NAME CMD...`
/// printing `NAME:done` or `NAME:refused`, and returns those results.
async fn guest_try(t: &TestRuntime, pod: &PodId, script: &str) -> Result<BTreeMap<String, String>> {
    let b = busybox();
    let full = format!(
        "B={b}\n\
         try() {{ name=$1; shift; if \"$@\" 2>/dev/null; then echo \"$name:done\"; else echo \"$name:refused\"; fi; }}\n\
         {script}"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        t.rt.enter_pod(pod, vec![b, "sh".into(), "-c".into(), full]),
    )
    .await
    .context("the guest script did not finish")??;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.exit_code == 0,
        "guest script failed ({}): {stdout}{}",
        out.exit_code,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn assert_results(got: &BTreeMap<String, String>, refused: &[&str], done: &[&str]) {
    for name in refused {
        assert_eq!(
            got.get(*name).map(String::as_str),
            Some("refused"),
            "{name}: {got:?}"
        );
    }
    for name in done {
        assert_eq!(
            got.get(*name).map(String::as_str),
            Some("done"),
            "{name}: {got:?}"
        );
    }
}

/// An entry's mode, owner and content hash.
type Entry = (u32, u32, Vec<u8>);

/// Every entry under `dir`, by relative path: mode, owner, and the SHA-256 of
/// its content (of a link's target for a link), read without following links.
fn digest(dir: &Path) -> Result<BTreeMap<PathBuf, Entry>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let path = e?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let content = if meta.file_type().is_symlink() {
                std::fs::read_link(&path)?
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                todo.push(path.clone());
                Vec::new()
            } else {
                std::fs::read(&path)?
            };
            let rel = path.strip_prefix(dir)?.to_owned();
            let hash = sha2::Sha256::digest(&content).to_vec();
            out.insert(rel, (meta.mode(), meta.uid(), hash));
        }
    }
    Ok(out)
}

/// Mount points outside `root` and outside the runtime roots of other tests
/// running at the same time (`/tmp/vc*`, see `TestRuntime`), whose pods mount
/// and unmount as they go.
fn mounts_outside(root: &Path) -> Vec<PathBuf> {
    let mut m: Vec<PathBuf> = vc_host::mountinfo::read()
        .expect("mountinfo")
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| !p.starts_with(root) && !p.to_string_lossy().starts_with("/tmp/vc"))
        .collect();
    m.sort();
    m
}

fn volume(host: &Path, container: &str, readonly: bool) -> VolumeConfig {
    VolumeConfig {
        host_path: host.to_owned(),
        container_path: container.to_owned(),
        readonly,
    }
}

async fn wait_for_file(path: &Path, content: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(path).ok().as_deref() != Some(content) {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{} never held {content:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_and_renames_planted_in_the_share_reach_nothing_on_the_host() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let canary = scratch.path().join("canary");
    std::fs::create_dir_all(canary.join("etc"))?;
    std::fs::create_dir_all(canary.join("dir/inner"))?;
    std::fs::write(canary.join("etc/shadow"), "root:secret\n")?;
    std::fs::write(canary.join("file"), "canary\n")?;
    std::fs::write(canary.join("dir/inner/x"), "x\n")?;
    let canary_before = digest(&canary)?;
    let mounts_before = mounts_outside(t.root());

    let vol = scratch.path().join("vol");
    std::fs::create_dir(&vol)?;
    std::fs::write(vol.join("data"), "host data\n")?;
    let file_vol = scratch.path().join("file-vol");
    std::fs::write(&file_vol, "file volume\n")?;
    let ro_file = scratch.path().join("ro-file");
    std::fs::write(&ro_file, "read-only\n")?;
    let rootfs = rootfs_copy(&t.rootfs, &scratch.path().join("rootfs"))?;
    let c = canary.display();

    let pod = t.pod("hostile").id;
    t.rt.run_pod(t.pod("hostile")).await?;
    let pod_dir = t.root().join("pods").join(pod.as_str());
    let export = vc_host::mountinfo::read()?
        .into_iter()
        .find(|m| m.mount_point == pod_dir.join("shared"))
        .context("the export is mounted")?;
    for o in ["ro", "nosuid", "nodev"] {
        assert!(export.has_option(o), "{o}: {export:?}");
    }
    let mut tools = t.container("tools", &["/bin/true"]);
    tools.readonly_rootfs = true;
    t.rt.create_container(&pod, tools).await?;

    // Before any other container exists: plants at the share's root and in
    // the levels the host resolves.
    let got = guest_try(
        &t,
        &pod,
        &format!(
            "try dirlink $B ln -s {c} /run/vc/shared/c1\n\
             try filelink $B ln -s {c}/etc/shadow /run/vc/shared/c2\n\
             try nested-dirs $B mkdir -p /run/vc/shared/c3/volumes\n\
             try nested-link $B ln -s ../tools /run/vc/shared/c4\n\
             try root-link $B ln -s / /run/vc/shared/root\n\
             try in-container-dir $B ln -s {c} /run/vc/shared/tools/volumes\n\
             try rename-rootfs $B mv /run/vc/shared/tools/rootfs /run/vc/shared/tools/gone\n\
             try rename-container $B mv /run/vc/shared/tools /run/vc/shared/gone\n\
             try new-file $B touch /run/vc/shared/new\n\
             try mknod $B mknod /run/vc/shared/blk b 8 0\n\
             try setuid $B chmod u+s /run/vc/shared/tools/rootfs/bin/busybox\n\
             $B ls -a /run/vc/shared | $B tr '\\n' ' ' | $B sed 's/^/ls:/'\n"
        ),
    )
    .await?;
    assert_results(
        &got,
        &[
            "dirlink",
            "filelink",
            "nested-dirs",
            "nested-link",
            "root-link",
            "in-container-dir",
            "rename-rootfs",
            "rename-container",
            "new-file",
            "mknod",
            "setuid",
        ],
        &[],
    );
    assert_eq!(
        got.get("ls").map(|s| s.trim()),
        Some(". .. tools"),
        "{got:?}"
    );

    // A container with a read-write rootfs, a directory volume, a read-write
    // file volume and a read-only one.
    let mut c1 = ContainerConfig::new(
        "c1".parse()?,
        &rootfs,
        vec![
            "/bin/sh".into(),
            "-c".into(),
            "cat /hostile-data/data > /hostile-data/seen; echo appended >> /hostile-f; \
             echo from-c1 > /hostile-data/out; exec sleep 600"
                .into(),
        ],
    );
    c1.volumes = vec![
        // Paths no other test uses: the shared busybox rootfs keeps the
        // mount points other tests made in it, and the copy inherits them.
        volume(&vol, "/hostile-data", false),
        volume(&file_vol, "/hostile-f", false),
        volume(&ro_file, "/hostile-ro", true),
    ];
    t.rt.create_container(&pod, c1).await?;

    // Between create and delete: the bound levels cannot be renamed, linked
    // or removed; inside the read-write rootfs and volume (the user's data)
    // the guest writes what it likes, links included.
    let plants = format!(
        "try rename-bound $B mv /run/vc/shared/c1/rootfs /run/vc/shared/c1/moved\n\
         try rename-volume $B mv /run/vc/shared/c1/volumes/0 /run/vc/shared/c1/volumes/9\n\
         try rename-volumes $B mv /run/vc/shared/c1/volumes /run/vc/shared/c1/v\n\
         try rmdir-volumes $B rmdir /run/vc/shared/c1/volumes\n\
         try unlink-file-volume $B rm -f /run/vc/shared/c1/volumes/1\n\
         try volume-link $B ln -s {c} /run/vc/shared/c1/volumes/3\n\
         try container-link $B ln -s {c} /run/vc/shared/c1/x\n\
         try ro-volume-write $B sh -c 'echo x > /run/vc/shared/c1/volumes/2'\n\
         try in-rootfs $B ln -sf {c} /run/vc/shared/c1/rootfs/evil\n\
         try in-volume $B ln -sf {c}/etc /run/vc/shared/c1/volumes/0/evil\n\
         try in-volume-nested $B mkdir -p /run/vc/shared/c1/volumes/0/d\n\
         try in-volume-nested-link $B ln -sf ../evil /run/vc/shared/c1/volumes/0/d/deeper\n"
    );
    let refused = [
        "rename-bound",
        "rename-volume",
        "rename-volumes",
        "rmdir-volumes",
        "unlink-file-volume",
        "volume-link",
        "container-link",
        "ro-volume-write",
    ];
    let done = [
        "in-rootfs",
        "in-volume",
        "in-volume-nested",
        "in-volume-nested-link",
    ];
    assert_results(&guest_try(&t, &pod, &plants).await?, &refused, &done);

    let c1 = "c1".parse()?;
    t.rt.start_container(&pod, &c1).await?;
    wait_for_file(&vol.join("out"), "from-c1\n").await?;
    // Again while it runs, then after it stopped.
    assert_results(&guest_try(&t, &pod, &plants).await?, &refused, &done);
    t.rt.stop_container(&pod, &c1, Duration::from_secs(1))
        .await?;
    assert_results(&guest_try(&t, &pod, &plants).await?, &refused, &done);
    t.rt.delete_container(&pod, &c1).await?;
    let binds = t.leftover_binds();
    assert!(
        binds.iter().all(|m| !m.to_string_lossy().contains("/c1")),
        "{binds:?}"
    );
    assert!(!pod_dir.join("mounts/c1").exists());

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;

    assert_eq!(digest(&canary)?, canary_before, "the canary tree changed");
    assert_eq!(
        mounts_outside(t.root()),
        mounts_before,
        "a mount appeared outside the pod"
    );
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    // No pod's lock file is left (the boot admission's slots, `locks/boot/`,
    // stay by design: see docs/reliability.md).
    let locks: Vec<_> = std::fs::read_dir(t.root().join("locks"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert!(locks.iter().all(|n| n == "boot"), "{locks:?}");
    // The volumes' host data: what the host put there, what the container
    // wrote, and the guest's links left as links.
    assert_eq!(std::fs::read_to_string(vol.join("data"))?, "host data\n");
    assert_eq!(std::fs::read_to_string(vol.join("seen"))?, "host data\n");
    assert_eq!(
        std::fs::read_to_string(&file_vol)?,
        "file volume\nappended\n"
    );
    assert_eq!(std::fs::read_to_string(&ro_file)?, "read-only\n");
    for link in [vol.join("evil"), vol.join("d/deeper"), rootfs.join("evil")] {
        assert!(
            std::fs::symlink_metadata(&link)?.file_type().is_symlink(),
            "{}",
            link.display()
        );
    }
    assert!(rootfs.join("bin/busybox").is_file(), "the rootfs is intact");
    Ok(())
}

/// A running pod whose `state.json` is then corrupted (its containers and
/// state unreadable, its VM and binds still named): the ordinary delete
/// refuses, the forced delete stops the VM's processes, undoes the binds and
/// removes the pod, its lock and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_delete_cleans_up_a_pod_with_a_corrupt_record() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("corrupt").id;
    let status = t.rt.run_pod(t.pod("corrupt")).await?;
    let pids: Vec<i32> = status.processes.iter().map(|p| p.pid).collect();
    assert!(!pids.is_empty());
    let mut c = t.container("c1", &["/bin/sleep", "600"]);
    c.readonly_rootfs = true;
    t.rt.create_container(&pod, c).await?;
    let pod_dir = t.root().join("pods").join(pod.as_str());
    let state = pod_dir.join("state.json");
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
    assert!(
        value["binds"].as_array().is_some_and(|b| b.len() == 3),
        "{value}"
    );
    value["containers"] = serde_json::json!(42);
    value["state"] = serde_json::json!("exploded");
    std::fs::write(&state, serde_json::to_vec(&value)?)?;

    let err = t.rt.delete_pod(&pod).await.expect_err("a corrupt record");
    assert!(err.to_string().contains("is not valid"), "{err}");
    t.rt.force_delete_pod(&pod).await?;
    for pid in pids {
        assert!(pid_gone(pid), "pid {pid} still runs");
    }
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(!t.root().join("locks/corrupt.lock").exists());
    assert!(t.rootfs.join("bin/busybox").is_file());
    Ok(())
}
