//! Volumes and tmpfs mounts in real pod VMs: a read-write volume seen both ways
//! (container to host and host to container while it runs), a read-only volume
//! refusing writes inside, a tmpfs whose size is enforced, the size of
//! `/dev/shm`, mount paths resolved inside the rootfs (a link out of it stays
//! in it, a link to its root is refused), a missing host path refused before
//! anything is created, `virtc run --volume --tmpfs`, single-file volumes
//! from an OCI spec (CRI's `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
//! `/dev/termination-log`), and no bind mount or share directory left after
//! delete (with the volumes' host files intact).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use support::pod::TestRuntime;
use support::rootfs_copy;
use support::virtc::Virtc;
use vc_host::agent::{collect_output, Output};
use vc_host::config::{ConfigError, ContainerConfig, TmpfsConfig, VolumeConfig};
use vc_host::id::PodId;
use vc_host::RuntimeError;
use vc_proto::ProcessRef;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn volume(host: &Path, container: &str, readonly: bool) -> VolumeConfig {
    VolumeConfig {
        host_path: host.to_owned(),
        container_path: container.to_owned(),
        readonly,
    }
}

/// The pod's share on the host.
fn shared_dir(t: &TestRuntime, pod: &PodId) -> PathBuf {
    t.root().join("pods").join(pod.as_str()).join("shared")
}

/// Starts a created container and collects its output in a task.
async fn start_and_collect(
    t: &TestRuntime,
    pod: &PodId,
    id: &str,
) -> Result<tokio::task::JoinHandle<Result<Output>>> {
    t.rt.start_container(pod, &id.parse()?).await?;
    let agent = t.rt.pod_agent(pod).await?;
    let main = ProcessRef {
        container_id: id.to_owned(),
        exec_id: None,
    };
    Ok(tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(120), collect_output(&agent, &main))
            .await
            .context("the container did not finish")?
            .context("collecting the container's output")
    }))
}

/// Waits until the file at `path` holds `content` (it may exist, empty, for
/// a moment before the writer's data lands).
async fn wait_for_content(path: &Path, content: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match std::fs::read_to_string(path) {
            Ok(c) if c == content => return Ok(()),
            other if Instant::now() > deadline => {
                bail!(
                    "{} did not hold {content:?} within {timeout:?}: {other:?}",
                    path.display()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

const VOLUMES_SCRIPT: &str = r#"
cat /data/from-host
echo written-in-container > /data/from-container
cat /config/keep
( echo x > /config/new ) 2>&1 && echo RO-WRITE-SUCCEEDED
dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>&1 | head -1
echo "scratch-mode=$(stat -c %a /scratch)"
df -k /scratch /dev/shm | awk 'NR>1 {print $6 "-kib=" $2}'
i=0
while [ ! -e /data/late ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
cat /data/late
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_both_ways_read_only_tmpfs_and_shm() -> Result<()> {
    let t = TestRuntime::new()?;
    let host = tempfile::tempdir()?;
    let rw = host.path().join("rw");
    let ro = host.path().join("ro");
    std::fs::create_dir(&rw)?;
    std::fs::create_dir(&ro)?;
    std::fs::write(rw.join("from-host"), "hello from the host\n")?;
    std::fs::write(ro.join("keep"), "kept read-only\n")?;

    let pod = t.pod("vols").id;
    t.rt.run_pod(t.pod("vols")).await?;
    let mut c = t.container("vols", &["/bin/sh", "-c", VOLUMES_SCRIPT]);
    c.volumes = vec![volume(&rw, "/data", false), volume(&ro, "/config", true)];
    c.tmpfs = vec![TmpfsConfig {
        path: "/scratch".to_owned(),
        size_bytes: Some(1 << 20),
        mode: Some(0o700),
    }];
    c.shm_size_bytes = Some(2 << 20);
    t.rt.create_container(&pod, c).await?;
    let share = shared_dir(&t, &pod).join("vols");
    assert_eq!(
        t.leftover_mounts()
            .iter()
            .filter(|m| m.starts_with(&share))
            .count(),
        3,
        "rootfs and two volumes bound into the share: {:?}",
        t.leftover_mounts()
    );
    let output = start_and_collect(&t, &pod, "vols").await?;

    // Container to host, then host to container while it runs.
    wait_for_content(
        &rw.join("from-container"),
        "written-in-container\n",
        Duration::from_secs(60),
    )
    .await?;
    std::fs::write(rw.join("late"), "written by the host later\n")?;
    let out = output.await??;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"hello from the host"), "{stdout}");
    assert!(lines.contains(&"kept read-only"), "{stdout}");
    assert!(
        stdout.contains("Read-only file system") && !stdout.contains("RO-WRITE-SUCCEEDED"),
        "a write to the read-only volume fails inside: {stdout}"
    );
    assert!(
        !ro.join("new").exists(),
        "nothing written to the read-only volume"
    );
    assert!(
        stdout.contains("No space left on device"),
        "2 MiB do not fit a 1 MiB tmpfs: {stdout}"
    );
    assert!(lines.contains(&"scratch-mode=700"), "{stdout}");
    assert!(lines.contains(&"/scratch-kib=1024"), "{stdout}");
    assert!(lines.contains(&"/dev/shm-kib=2048"), "{stdout}");
    assert_eq!(lines.last(), Some(&"written by the host later"), "{stdout}");

    // Delete: the binds go, the host's files stay.
    t.rt.delete_container(&pod, &"vols".parse()?).await?;
    assert!(
        t.leftover_mounts().iter().all(|m| !m.starts_with(&share)),
        "{:?}",
        t.leftover_mounts()
    );
    assert!(!share.exists(), "{} left", share.display());
    assert!(rw.join("from-host").is_file() && rw.join("late").is_file());
    assert!(ro.join("keep").is_file());

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

/// A private copy of the busybox rootfs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_stay_inside_the_rootfs_and_missing_host_paths_are_refused() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let rootfs = rootfs_copy(&t.rootfs, &scratch.path().join("rootfs"))?;
    std::os::unix::fs::symlink("../../../../../..", rootfs.join("escape"))?;
    std::os::unix::fs::symlink("/../../../run", rootfs.join("evil"))?;
    let vol = scratch.path().join("vol");
    std::fs::create_dir(&vol)?;

    let pod = t.pod("links").id;
    t.rt.run_pod(t.pod("links")).await?;
    let share = shared_dir(&t, &pod);
    let with_rootfs = |mut c: ContainerConfig| {
        c.rootfs = rootfs.clone();
        c
    };

    // A link climbing out of the rootfs resolves to its root: refused.
    let mut c = with_rootfs(t.container("escape", &["/bin/true"]));
    c.volumes = vec![volume(&vol, "/escape", false)];
    let err =
        t.rt.create_container(&pod, c)
            .await
            .expect_err("a mount on the rootfs itself is refused");
    let err = format!("{:#}", anyhow::Error::from(err));
    assert!(
        err.contains("resolves to the root of the container"),
        "{err}"
    );
    let status = t.rt.pod_status(&pod).await?;
    assert!(status.containers.is_empty(), "{:?}", status.containers);
    assert!(!share.join("escape").exists(), "share directory left");
    assert!(t.leftover_binds().is_empty(), "{:?}", t.leftover_binds());

    // An absolute link to /run lands in the rootfs' /run, not the VM's.
    let mut c = with_rootfs(t.container(
        "evil",
        &["/bin/sh", "-c", "echo inside > /evil/vol/f && ls /run/vol"],
    ));
    c.volumes = vec![volume(&vol, "/evil/vol", false)];
    t.rt.create_container(&pod, c).await?;
    let out = start_and_collect(&t, &pod, "evil").await?.await??;
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "f\n");
    assert_eq!(std::fs::read_to_string(vol.join("f"))?, "inside\n");
    assert!(
        rootfs.join("run/vol").is_dir(),
        "the mount point was made inside the rootfs copy"
    );
    // "evil" stays (stopped, its volume bound) for stop_pod to clean up.

    // A host path that does not exist: a configuration error, nothing made.
    let mut c = with_rootfs(t.container("missing", &["/bin/true"]));
    c.volumes = vec![volume(&scratch.path().join("nope"), "/data", false)];
    let err =
        t.rt.create_container(&pod, c.clone())
            .await
            .expect_err("missing host path");
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::MissingPath { .. })),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "volume host path {} does not exist",
            scratch.path().join("nope").display()
        )
    );
    let names: Vec<String> =
        t.rt.pod_status(&pod)
            .await?
            .containers
            .iter()
            .map(|c| c.id.to_string())
            .collect();
    assert_eq!(names, ["evil"], "no record of the refused container");
    assert!(!share.join("missing").exists());
    assert!(
        t.leftover_mounts()
            .iter()
            .all(|m| !m.starts_with(share.join("missing"))),
        "{:?}",
        t.leftover_mounts()
    );

    t.rt.stop_pod(&pod).await?;
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert_eq!(
        std::fs::read_to_string(vol.join("f"))?,
        "inside\n",
        "stopping the pod unbound the volume without touching its files"
    );
    t.rt.delete_pod(&pod).await?;

    // The same in a pod's configuration: refused before the pod exists.
    let mut config = t.pod("never");
    config.containers = vec![c];
    let err = t.rt.run_pod(config).await.expect_err("missing host path");
    assert!(
        matches!(&err, RuntimeError::Config(ConfigError::MissingPath { .. })),
        "{err:?}"
    );
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}

#[test]
fn virtc_run_takes_volumes_and_tmpfs() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    let host = tempfile::tempdir()?;
    std::fs::write(host.path().join("in"), "from the host\n")?;
    let spec = format!("{}:/data", host.path().display());
    let ro_spec = format!("{}:/ro:ro", host.path().display());

    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--volume",
        &spec,
        "-v",
        &ro_spec,
        "--tmpfs",
        "/t:size=512k,mode=1777",
        "--shm-size",
        "1m",
        "--",
        "/bin/sh",
        "-c",
        "cat /data/in; echo cli > /data/out; touch /ro/x 2>/dev/null || echo ro-refused; \
         df -k /t /dev/shm | awk 'NR>1 {print $6 \"-kib=\" $2}'",
    ])?;
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(
        ran.stdout, "from the host\nro-refused\n/t-kib=512\n/dev/shm-kib=1024\n",
        "{ran}"
    );
    assert_eq!(std::fs::read_to_string(host.path().join("out"))?, "cli\n");

    let missing = format!("{}:/data", host.path().join("nope").display());
    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--volume",
        &missing,
        "--",
        "/bin/true",
    ])?;
    assert_ne!(ran.code, Some(0), "{ran}");
    assert!(
        ran.stderr.contains("volume host path") && ran.stderr.contains("does not exist"),
        "{ran}"
    );
    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--volume",
        "/a",
        "--",
        "/bin/true",
    ])?;
    assert_ne!(ran.code, Some(0), "{ran}");
    assert!(ran.stderr.contains("HOST:CONTAINER"), "{ran}");
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    Ok(())
}

const FILE_BINDS_SCRIPT: &str = r#"
cat /etc/hosts /etc/resolv.conf /etc/hostname
hostname
echo "terminated: all good" > /dev/termination-log
( echo x >> /etc/resolv.conf ) 2>&1 && echo RO-WRITE-SUCCEEDED
grep -c ' /dev/mqueue mqueue ' /proc/mounts
"#;

/// An OCI spec with file binds, as containerd's CRI plugin writes for every
/// container (`/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`,
/// `/dev/termination-log`), mapped by `vc_host::oci` and run in a real pod:
/// each file is the host's (not the agent's copies), a read-only one refuses
/// writes, the container's write reaches the host file, `/dev/mqueue` is
/// mounted, and delete leaves the host files and no bind behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_file_volumes_from_an_oci_spec() -> Result<()> {
    let t = TestRuntime::new()?;
    let scratch = tempfile::tempdir()?;
    let rootfs = rootfs_copy(&t.rootfs, &scratch.path().join("rootfs"))?;
    let files = scratch.path().join("files");
    std::fs::create_dir(&files)?;
    std::fs::write(files.join("hosts"), "192.0.2.7 from-the-spec\n")?;
    std::fs::write(files.join("resolv.conf"), "nameserver 192.0.2.53\n")?;
    std::fs::write(files.join("hostname"), "spec-hostname\n")?;
    std::fs::write(files.join("termination-log"), "")?;

    let mut spec: serde_json::Value = serde_json::from_str(include_str!(
        "../../vc-host/src/oci/testdata/ctr-default.json"
    ))?;
    spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    spec["hostname"] = "oci-files".into();
    spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", FILE_BINDS_SCRIPT]);
    let mounts = spec["mounts"].as_array_mut().context("mounts")?;
    for (dest, name, opt) in [
        ("/etc/hosts", "hosts", "rw"),
        ("/etc/resolv.conf", "resolv.conf", "ro"),
        ("/etc/hostname", "hostname", "rw"),
        ("/dev/termination-log", "termination-log", "rw"),
    ] {
        mounts.push(serde_json::json!({"destination": dest, "type": "bind",
            "source": files.join(name), "options": ["rbind", "rprivate", opt]}));
    }
    let bundle = scratch.path().join("bundle");
    std::fs::create_dir(&bundle)?;
    std::fs::write(bundle.join("config.json"), spec.to_string())?;

    let spec = vc_host::oci::load_spec(&bundle)?;
    let oci = vc_host::oci::container_from_spec(
        "files".parse()?,
        &bundle,
        &spec,
        &vc_host::oci::OciOptions::default(),
    )?;
    assert_eq!(oci.container.volumes.len(), 4);
    let pod = PodId::new("ocifiles")?;
    let config = oci.pod.pod_config(pod.clone(), t.pod("ocifiles").vm)?;
    t.rt.run_pod(config).await?;
    let out = t.run_container(&pod, oci.container).await?;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.exit_code,
        0,
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "192.0.2.7 from-the-spec",
            "nameserver 192.0.2.53",
            "spec-hostname",
            "oci-files"
        ],
        "the spec's files, not the pod's copies: {stdout}"
    );
    assert!(
        stdout.contains("Read-only file system") && !stdout.contains("RO-WRITE-SUCCEEDED"),
        "{stdout}"
    );
    assert_eq!(lines.last(), Some(&"1"), "/dev/mqueue mounted: {stdout}");
    assert_eq!(
        std::fs::read_to_string(files.join("termination-log"))?,
        "terminated: all good\n"
    );
    assert_eq!(
        std::fs::read_to_string(files.join("resolv.conf"))?,
        "nameserver 192.0.2.53\n"
    );

    t.rt.delete_container(&pod, &"files".parse()?).await?;
    assert!(t.leftover_binds().is_empty(), "{:?}", t.leftover_binds());
    for name in ["hosts", "resolv.conf", "hostname", "termination-log"] {
        assert!(files.join(name).is_file(), "{name} kept");
    }
    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_mounts().is_empty(), "{:?}", t.leftover_mounts());
    assert!(t.leftover_pods().is_empty());
    Ok(())
}
