//! Block devices in real pod VMs: a container booted from a raw ext4 image
//! and given an extra disk on microvm (attached at boot), the refusal to add a
//! disk to a running microvm pod, and on q35 disks hot-plugged into a running
//! pod through QMP, written by the container, unplugged on delete (gone from
//! the guest), with the data read back from the image on the host.
//!
//! The images are made by the test with `mkfs.ext4 -d` (e2fsprogs, installed
//! by `cargo xtask deps`) and read back with `debugfs`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use support::find_tool;
use support::pod::TestRuntime;
use support::virtc::{Ran, Virtc};
use vc_host::agent::{collect_output, Output};
use vc_host::config::{ContainerConfig, DiskConfig};
use vc_host::hypervisor::Machine;
use vc_host::id::PodId;
use vc_host::RuntimeError;
use vc_proto::ProcessRef;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An e2fsprogs program: on `PATH`, else in `/usr/sbin` or `/sbin` (which a
/// non-login `PATH` may lack); failing, the message names `cargo xtask deps`.
fn e2fs_tool(name: &str) -> Result<PathBuf> {
    find_tool(name).or_else(|e| {
        ["/usr/sbin", "/sbin"]
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|p| p.is_file())
            .ok_or(e)
    })
}

/// A raw ext4 image of `size_mib` at `path`, holding the files of `from`.
fn make_ext4(from: &Path, path: &Path, size_mib: u32) -> Result<PathBuf> {
    let mkfs = e2fs_tool("mkfs.ext4")?;
    let out = Command::new(&mkfs)
        .args(["-q", "-F", "-d"])
        .arg(from)
        .arg(path)
        .arg(format!("{size_mib}M"))
        .output()
        .with_context(|| format!("cannot run {}", mkfs.display()))?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 -d {} {} failed: {}",
        from.display(),
        path.display(),
        text(&out.stderr)
    );
    Ok(path.to_owned())
}

/// A root image (a copy of the busybox rootfs with `/image-marker` holding
/// `marker`) and a data image (holding `/seed` with `seed`), in `scratch`.
fn make_images(
    t: &TestRuntime,
    scratch: &Path,
    marker: &str,
    seed: &str,
) -> Result<(PathBuf, PathBuf)> {
    let tree = scratch.join("tree");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&t.rootfs)
        .arg(&tree)
        .status()?;
    ensure!(copied.success(), "cp -a {} failed", t.rootfs.display());
    std::fs::write(tree.join("image-marker"), marker)?;
    let root_img = make_ext4(&tree, &scratch.join("root.ext4"), 32)?;
    let seed_dir = scratch.join("seed");
    std::fs::create_dir(&seed_dir)?;
    std::fs::write(seed_dir.join("seed"), seed)?;
    let data_img = make_ext4(&seed_dir, &scratch.join("data.ext4"), 8)?;
    Ok((root_img, data_img))
}

/// A file of an ext4 image, read on the host with `debugfs`.
fn read_from_image(image: &Path, file: &str) -> Result<String> {
    let debugfs = e2fs_tool("debugfs")?;
    let out = Command::new(&debugfs)
        .arg("-R")
        .arg(format!("cat {file}"))
        .arg(image)
        .output()
        .with_context(|| format!("cannot run {}", debugfs.display()))?;
    ensure!(
        out.status.success(),
        "debugfs failed: {}",
        text(&out.stderr)
    );
    Ok(text(&out.stdout))
}

/// How many of `images` process `pid` has open.
/// How many of `images` process `pid` holds open (QEMU holds a hot-plugged
/// image twice: the descriptor passed with `add-fd` and the block node's
/// copy of it).
fn images_open_by(pid: i32, images: &[&Path]) -> Result<usize> {
    let mut held: std::collections::BTreeSet<&Path> = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if let Ok(target) = std::fs::read_link(fd?.path()) {
            held.extend(images.iter().copied().filter(|i| *i == target));
        }
    }
    Ok(held.len())
}

/// Waits until `pid` holds none of `images`: QEMU closes a passed image's
/// fd set once its node is deleted and the monitor connection has closed.
async fn wait_images_closed(pid: i32, images: &[&Path], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let held = images_open_by(pid, images)?;
        if held == 0 || Instant::now() > deadline {
            return Ok(held);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Collects the output of a container's main process (already started).
async fn output_of(t: &TestRuntime, pod: &PodId, id: &str) -> Result<Output> {
    let agent = t.rt.pod_agent(pod).await?;
    let main = ProcessRef {
        container_id: id.to_owned(),
        exec_id: None,
    };
    tokio::time::timeout(Duration::from_secs(120), collect_output(&agent, &main))
        .await
        .context("the container did not finish")?
        .context("collecting the container's output")
}

/// A container whose root filesystem is `image`.
fn image_container(t: &TestRuntime, id: &str, image: &Path, command: &[&str]) -> ContainerConfig {
    let mut c = t.container(id, command);
    c.rootfs = PathBuf::new();
    c.rootfs_image = Some(image.to_owned());
    c
}

fn data_disk(image: &Path) -> DiskConfig {
    DiskConfig {
        image: image.to_owned(),
        container_path: "/data".to_owned(),
        fstype: "ext4".to_owned(),
        readonly: false,
    }
}

const DISK_SCRIPT: &str = "cat /image-marker; cat /data/seed; echo from-guest > /data/out; \
     echo rootfs-write > /written; sync; ls /sys/block";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microvm_boots_a_container_from_an_ext4_image_and_refuses_hotplug() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let (root_img, data_img) = make_images(
        &t,
        scratch.path(),
        "booted from the image\n",
        "seeded on the host\n",
    )?;

    let mut c = image_container(&t, "img", &root_img, &["/bin/sh", "-c", DISK_SCRIPT]);
    c.disks = vec![data_disk(&data_img)];
    let mut config = t.pod("blk-mvm");
    config.containers = vec![c];
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;
    let out = output_of(&t, &pod, "img").await?;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..2],
        ["booted from the image", "seeded on the host"],
        "{stdout}"
    );
    assert_eq!(lines[2..], ["vda", "vdb"], "two virtio disks: {stdout}");

    // A running microvm pod takes no new disk: refused before anything changes.
    let mut late = t.container("late", &["/bin/true"]);
    late.disks = vec![data_disk(&data_img)];
    let err =
        t.rt.create_container(&pod, late)
            .await
            .expect_err("no hotplug on microvm");
    assert!(
        matches!(&err, RuntimeError::HotplugUnsupported { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("microvm"), "{err}");
    let status = t.rt.pod_status(&pod).await?;
    assert_eq!(status.containers.len(), 1, "{:?}", status.containers);
    let shared = t.root().join("pods").join(pod.as_str()).join("shared");
    assert!(!shared.join("late").exists());

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert_eq!(read_from_image(&data_img, "/out")?, "from-guest\n");
    assert_eq!(read_from_image(&root_img, "/written")?, "rootfs-write\n");
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_hot_plugs_disks_into_a_running_pod_and_unplugs_them_on_delete() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let (root_img, data_img) =
        make_images(&t, scratch.path(), "hot-plugged root\n", "seeded for q35\n")?;
    let tree = scratch.path().join("tree");

    let mut config = t.pod("blk-q35");
    config.vm.machine = Machine::Q35;
    let pod = config.id.clone();
    let boot = Instant::now();
    t.rt.run_pod(config).await?;
    eprintln!("q35 pod up in {:?}", boot.elapsed());

    let mut c = image_container(&t, "disk", &root_img, &["/bin/sh", "-c", DISK_SCRIPT]);
    c.disks = vec![data_disk(&data_img)];
    let plug = Instant::now();
    t.rt.create_container(&pod, c).await?;
    eprintln!("two disks hot-plugged and mounted in {:?}", plug.elapsed());
    t.rt.start_container(&pod, &"disk".parse()?).await?;
    let out = output_of(&t, &pod, "disk").await?;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..2],
        ["hot-plugged root", "seeded for q35"],
        "{stdout}"
    );
    assert_eq!(lines[2..], ["vda", "vdb"], "two virtio disks: {stdout}");

    let qemu =
        t.rt.pod_status(&pod)
            .await?
            .processes
            .iter()
            .find(|p| p.name == "qemu")
            .map(|p| p.pid)
            .context("the pod lists its QEMU")?;
    assert_eq!(
        images_open_by(qemu, &[&root_img, &data_img])?,
        2,
        "QEMU holds both images while they are plugged"
    );
    let unplug = Instant::now();
    t.rt.delete_container(&pod, &"disk".parse()?).await?;
    eprintln!("two disks unplugged in {:?}", unplug.elapsed());
    assert_eq!(
        wait_images_closed(qemu, &[&root_img, &data_img], Duration::from_secs(10)).await?,
        0,
        "QEMU closed the images (blockdev-del after DEVICE_DELETED)"
    );

    // The guest no longer lists them.
    let probe = t.container("probe", &["/bin/sh", "-c", "ls /sys/block; echo end"]);
    t.rt.create_container(&pod, probe).await?;
    t.rt.start_container(&pod, &"probe".parse()?).await?;
    let out = output_of(&t, &pod, "probe").await?;
    assert_eq!(text(&out.stdout), "end\n", "no disk left in the guest");
    t.rt.delete_container(&pod, &"probe".parse()?).await?;

    // A create the agent refuses after the disks were plugged (a mount path
    // that resolves to the rootfs itself): they are unplugged again and
    // nothing is left in QEMU or the share.
    std::os::unix::fs::symlink("../../..", tree.join("escape"))?;
    let mut bad = t.container("bad", &["/bin/true"]);
    bad.rootfs = tree.clone();
    bad.disks = vec![DiskConfig {
        container_path: "/escape".to_owned(),
        ..data_disk(&data_img)
    }];
    let err =
        t.rt.create_container(&pod, bad)
            .await
            .expect_err("a mount on the rootfs itself is refused");
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(err.contains("resolves to the root"), "{err}");
    assert_eq!(
        wait_images_closed(qemu, &[&data_img], Duration::from_secs(10)).await?,
        0,
        "the failed create unplugged its disk"
    );
    assert_eq!(t.rt.pod_status(&pod).await?.containers.len(), 0);
    let shared = t.root().join("pods").join(pod.as_str()).join("shared");
    assert!(!shared.join("bad").exists());
    assert!(t.leftover_binds().is_empty(), "{:?}", t.leftover_binds());

    // QEMU let go of the images: the host reads what the guest wrote.
    assert_eq!(read_from_image(&data_img, "/out")?, "from-guest\n");
    assert_eq!(read_from_image(&root_img, "/written")?, "rootfs-write\n");

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtc_runs_a_container_from_an_image_with_a_disk() -> Result<()> {
    let t = TestRuntime::new()?;
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let scratch = tempfile::tempdir()?;
    let (root_img, data_img) = make_images(
        &t,
        scratch.path(),
        "booted from the image\n",
        "seeded on the host\n",
    )?;

    let disk = format!("{}:/data:rw:ext4", data_img.display());
    let ran = virtc_run(
        &virtc,
        &[
            "run".as_ref(),
            "--rootfs-image".as_ref(),
            root_img.as_os_str(),
            "--disk".as_ref(),
            disk.as_ref(),
            "--".as_ref(),
            "/bin/sh".as_ref(),
            "-c".as_ref(),
            "cat /image-marker /data/seed; echo from-virtc > /data/out; sync".as_ref(),
        ],
    )
    .await?;
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(
        ran.stdout, "booted from the image\nseeded on the host\n",
        "{ran}"
    );
    assert_eq!(read_from_image(&data_img, "/out")?, "from-virtc\n");
    assert!(t.leftover_pods().is_empty(), "virtc run cleans up");

    // Both a directory and an image is an error before anything is created.
    let both = virtc_run(
        &virtc,
        &[
            "run".as_ref(),
            "--rootfs".as_ref(),
            t.rootfs.as_os_str(),
            "--rootfs-image".as_ref(),
            "/nonexistent.ext4".as_ref(),
            "--".as_ref(),
            "true".as_ref(),
        ],
    )
    .await?;
    assert_ne!(both.code, Some(0), "{both}");
    assert!(both.stderr.contains("rootfs-image"), "{both}");
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

/// Runs virtc to completion off the async threads.
async fn virtc_run(virtc: &Virtc, args: &[&std::ffi::OsStr]) -> Result<Ran> {
    let virtc = virtc.clone();
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    tokio::task::spawn_blocking(move || virtc.run(args)).await?
}
