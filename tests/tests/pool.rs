//! The warm pool on real VMs: slots filled, adopted by pods and drained; a
//! slot whose VM died, or that booted a guest image since rebuilt, discarded
//! at the claim; two processes racing for one slot; pods that must boot cold
//! (a network namespace on microvm, another shape, `--no-pool`); a q35 pod
//! with a network namespace adopting a slot, its NICs hot-plugged; and every
//! pool VM accounted for by the leak checks.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use support::net::{tcp_both_ways, Netns, Pair};
use support::pod::{pid_gone, wait_pids_gone, TestRuntime};
use support::virtc::Virtc;
use support::{ChildGuard, GuestImage};
use vc_host::config::VolumeConfig;
use vc_host::hypervisor::Machine;
use vc_host::id::PodId;
use vc_host::runtime::{PoolShape, PoolStatus, SlotHealth};

/// QEMU's pid of a pod, from its status.
async fn qemu_pid(t: &TestRuntime, pod: &PodId) -> Result<i32> {
    let status = t.rt.pod_status(pod).await?;
    status
        .processes
        .iter()
        .find(|p| p.name == "qemu")
        .map(|p| p.pid)
        .with_context(|| format!("pod {pod} has no QEMU: {status:?}"))
}

fn slot_pids(status: &PoolStatus) -> BTreeSet<i32> {
    status.slots.iter().filter_map(|s| s.vmm_pid()).collect()
}

/// Nothing of the runtime is left: no pod, no slot, no mount, no process
/// or cgroup under the runtime's parent cgroups.
fn assert_nothing_left(t: &TestRuntime) -> Result<()> {
    ensure!(
        t.leftover_pods().is_empty(),
        "pods left: {:?}",
        t.leftover_pods()
    );
    ensure!(
        t.leftover_slots().is_empty(),
        "slots left: {:?}",
        t.leftover_slots()
    );
    ensure!(
        vc_host::runtime::share::mounts_under(t.root()).is_empty(),
        "mounts left: {:?}",
        vc_host::runtime::share::mounts_under(t.root())
    );
    ensure!(
        t.cgroup_pids().is_empty(),
        "processes left: {:?}",
        t.cgroup_pids()
    );
    ensure!(
        t.leftover_cgroups().is_empty(),
        "cgroups left: {:?}",
        t.leftover_cgroups()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_adopt_and_drain() -> Result<()> {
    let t = TestRuntime::new()?;
    let filled = t.rt.fill_pool(2, &PoolShape::default()).await?;
    ensure!(filled.ready() == 2, "{filled:?}");
    let pooled = slot_pids(&filled);
    ensure!(pooled.len() == 2, "{filled:?}");
    // Filling again to the same count boots nothing.
    let again = t.rt.fill_pool(2, &PoolShape::default()).await?;
    ensure!(slot_pids(&again) == pooled, "{again:?}");
    // Each slot is one QEMU and its helpers, in cgroups of this runtime.
    let idle_pids = t.cgroup_pids();
    ensure!(idle_pids.len() >= 2 * 3, "{idle_pids:?}");

    // A pod adopts one: its QEMU is a pooled one, and nothing of the pool
    // shows in the guest (its hostname, a volume through the share).
    let scratch = tempfile::tempdir()?;
    std::fs::write(scratch.path().join("token"), "from-the-host")?;
    let mut c = t.container(
        "main",
        &[
            "/bin/sh",
            "-c",
            "hostname; cat /data/token; echo back > /data/back",
        ],
    );
    c.volumes.push(VolumeConfig {
        host_path: scratch.path().to_owned(),
        container_path: "/data".to_owned(),
        readonly: false,
    });
    let pod = t.pod("adopter").id;
    let mut config = t.pod("adopter");
    config.hostname = Some("adopter-host".to_owned());
    config.containers.push(c.clone());
    t.rt.run_pod(config).await?;
    let adopted = qemu_pid(&t, &pod).await?;
    ensure!(
        pooled.contains(&adopted),
        "QEMU {adopted} is not one of {pooled:?}"
    );
    let after = t.rt.pool_status().await?;
    ensure!(after.ready() == 1, "{after:?}");
    ensure!(!slot_pids(&after).contains(&adopted), "{after:?}");
    // The pod's files hold the VM now.
    let status = t.rt.pod_status(&pod).await?;
    let console = status.console_log.context("no console log")?;
    ensure!(
        console.starts_with(t.root().join("pods/adopter")),
        "{console:?}"
    );
    let out = t
        .run_container(&pod, {
            let mut c2 = c.clone();
            c2.id = "second".parse()?;
            c2
        })
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text == "adopter-host\nfrom-the-host",
        "the container printed {text:?}"
    );
    ensure!(std::fs::read_to_string(scratch.path().join("back"))? == "back\n");
    // An exec and a pause/resume work on the adopted VM as on any.
    t.rt.pause_pod(&pod).await?;
    t.rt.resume_pod(&pod).await?;
    let busybox = format!(
        "{}/bin/busybox",
        vc_host::runtime::share::guest_rootfs_path(&"main".parse()?)
    );
    let entered = tokio::time::timeout(
        Duration::from_secs(120),
        t.rt.enter_pod(&pod, vec![busybox, "hostname".into()]),
    )
    .await
    .context("hostname in the VM did not end within 2 minutes")??;
    ensure!(
        String::from_utf8_lossy(&entered.stdout).trim() == "adopter-host",
        "{entered:?}"
    );

    // Stopped, its VM is gone for good: never back in the pool.
    t.rt.stop_pod(&pod).await?;
    ensure!(
        wait_pids_gone(&[adopted], Duration::from_secs(10)),
        "QEMU {adopted} lives on"
    );
    let stopped = t.rt.pool_status().await?;
    ensure!(stopped.ready() == 1 && !slot_pids(&stopped).contains(&adopted));
    // Another pod adopts the other slot.
    let next = t.pod("next").id;
    t.rt.run_pod(t.pod("next")).await?;
    let second = qemu_pid(&t, &next).await?;
    ensure!(pooled.contains(&second) && second != adopted);
    ensure!(t.rt.pool_status().await?.slots.is_empty());
    // A pool that is empty means a cold boot.
    let cold = t.pod("cold").id;
    t.rt.run_pod(t.pod("cold")).await?;
    ensure!(!pooled.contains(&qemu_pid(&t, &cold).await?));

    t.rt.delete_pod(&pod).await?;
    for p in [&next, &cold] {
        t.rt.stop_pod(p).await?;
        t.rt.delete_pod(p).await?;
    }
    t.rt.fill_pool(1, &PoolShape::default()).await?;
    ensure!(t.rt.drain_pool().await? == 1);
    ensure!(t.rt.pool_status().await?.slots.is_empty());
    ensure!(
        wait_pids_gone(&idle_pids, Duration::from_secs(10)),
        "{:?}",
        t.cgroup_pids()
    );
    assert_nothing_left(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_killed_while_idle_is_discarded_never_handed_out() -> Result<()> {
    let t = TestRuntime::new()?;
    let filled = t.rt.fill_pool(1, &PoolShape::default()).await?;
    let slot_qemu = *slot_pids(&filled).first().context("no slot")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(slot_qemu),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    ensure!(wait_pids_gone(&[slot_qemu], Duration::from_secs(10)));
    let status = t.rt.pool_status().await?;
    ensure!(
        status.slots.len() == 1 && status.slots[0].health == SlotHealth::Dead,
        "{status:?}"
    );
    // The start finds it dead, discards it (its helpers too) and boots cold.
    let pod = t.pod("survivor").id;
    t.rt.run_pod(t.pod("survivor")).await?;
    let qemu = qemu_pid(&t, &pod).await?;
    ensure!(qemu != slot_qemu);
    ensure!(t.rt.pool_status().await?.slots.is_empty());
    let out = t
        .run_container(&pod, t.container("c", &["/bin/echo", "alive"]))
        .await?;
    ensure!(out.stdout == b"alive\n", "{out:?}");
    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert_nothing_left(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_booted_from_a_rebuilt_image_is_discarded_and_the_pod_boots_cold() -> Result<()> {
    // A copy of the guest image, which this test rebuilds.
    let images = tempfile::tempdir()?;
    let copy = images.path().join("guest-image");
    std::fs::create_dir(&copy)?;
    let original = GuestImage::locate()?;
    for file in [
        &original.paths.kernel,
        &original.paths.initrd,
        &original.paths.manifest,
    ] {
        let name = file.file_name().context("image file name")?;
        std::fs::copy(file, copy.join(name))?;
    }
    let t = TestRuntime::with_image(GuestImage::in_dir(copy)?)?;
    let filled = t.rt.fill_pool(1, &PoolShape::default()).await?;
    let slot_qemu = *slot_pids(&filled).first().context("no slot")?;
    // Rebuilt as `cargo xtask guest-image` writes it: a new initrd renamed
    // over the old one (the same bytes here, so that the pod boots).
    let initrd = &t.image.paths.initrd;
    let staged = initrd.with_extension("new");
    std::fs::copy(initrd, &staged)?;
    std::fs::rename(&staged, initrd)?;

    let pod = t.pod("fresh").id;
    t.rt.run_pod(t.pod("fresh")).await?;
    let qemu = qemu_pid(&t, &pod).await?;
    ensure!(
        qemu != slot_qemu,
        "the pod adopted the stale slot's QEMU {slot_qemu}"
    );
    ensure!(
        wait_pids_gone(&[slot_qemu], Duration::from_secs(10)),
        "the stale slot's QEMU {slot_qemu} lives on"
    );
    let status = t.rt.pool_status().await?;
    ensure!(status.slots.is_empty(), "{status:?}");
    let out = t
        .run_container(&pod, t.container("c", &["/bin/echo", "fresh"]))
        .await?;
    ensure!(out.stdout == b"fresh\n", "{out:?}");
    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert_nothing_left(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_for_one_slot_get_one_each_way() -> Result<()> {
    let t = TestRuntime::new()?;
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let filled = t.rt.fill_pool(1, &PoolShape::default()).await?;
    let slot_qemu = *slot_pids(&filled).first().context("no slot")?;
    for id in ["racer-a", "racer-b"] {
        t.rt.create_pod(t.pod(id)).await?;
    }
    // Two virtc processes start one pod each, at once.
    let scratch = tempfile::tempdir()?;
    let mut starts = Vec::new();
    for id in ["racer-a", "racer-b"] {
        let (_, mut cmd) = virtc.command(["pod", "start", id]);
        cmd.stdout(std::fs::File::create(
            scratch.path().join(format!("{id}.out")),
        )?)
        .stderr(std::fs::File::create(
            scratch.path().join(format!("{id}.err")),
        )?);
        starts.push((id, ChildGuard::spawn(id, &mut cmd)?));
    }
    for (id, child) in &mut starts {
        let status = child
            .wait_timeout(Duration::from_secs(300))?
            .with_context(|| format!("virtc pod start {id} hung"))?;
        let err = std::fs::read_to_string(scratch.path().join(format!("{id}.err")))?;
        ensure!(status.success(), "virtc pod start {id}: {status}: {err}");
    }
    let mut qemus = Vec::new();
    for id in ["racer-a", "racer-b"] {
        qemus.push(qemu_pid(&t, &id.parse()?).await?);
    }
    ensure!(
        qemus.iter().filter(|q| **q == slot_qemu).count() == 1,
        "exactly one pod adopts the slot's QEMU {slot_qemu}: {qemus:?}"
    );
    ensure!(qemus[0] != qemus[1]);
    ensure!(t.rt.pool_status().await?.slots.is_empty());
    for id in ["racer-a", "racer-b"] {
        let pod: PodId = id.parse()?;
        let out = t
            .run_container(&pod, t.container("c", &["/bin/hostname"]))
            .await?;
        ensure!(String::from_utf8_lossy(&out.stdout).trim() == id, "{out:?}");
        t.rt.stop_pod(&pod).await?;
        t.rt.delete_pod(&pod).await?;
    }
    assert_nothing_left(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netns_a_different_shape_or_no_pool_boot_cold() -> Result<()> {
    let t = TestRuntime::new()?;
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let filled = t.rt.fill_pool(1, &PoolShape::default()).await?;
    let pooled = slot_pids(&filled);

    // A pod with a network namespace.
    let ns = Netns::new("pool")?;
    let mut config = t.pod("netted");
    config.netns = Some(ns.path());
    let netted = config.id.clone();
    t.rt.run_pod(config).await?;
    ensure!(!pooled.contains(&qemu_pid(&t, &netted).await?));
    // Another shape.
    let mut config = t.pod("bigger");
    config.vm.memory_mib += 64;
    let bigger = config.id.clone();
    t.rt.run_pod(config).await?;
    ensure!(!pooled.contains(&qemu_pid(&t, &bigger).await?));
    // `virtc run --no-pool`.
    let rootfs = t.rootfs.to_string_lossy().into_owned();
    let ran = virtc.ok([
        "run",
        "--no-pool",
        "--rootfs",
        rootfs.as_str(),
        "--",
        "/bin/echo",
        "cold",
    ])?;
    ensure!(ran.stdout.contains("cold"), "{ran:?}");
    // The slot is still there, ready, and `virtc pool status` says so.
    let status = virtc.ok(["--json", "pool", "status"])?.json()?;
    let slots = status["slots"].as_array().context("slots")?;
    ensure!(
        slots.len() == 1 && slots[0]["health"] == "ready",
        "{status}"
    );
    ensure!(slot_pids(&t.rt.pool_status().await?) == pooled);

    for p in [&netted, &bigger] {
        t.rt.stop_pod(p).await?;
        t.rt.delete_pod(p).await?;
    }
    let drained = virtc.ok(["--json", "pool", "drain"])?.json()?;
    ensure!(drained["removed"] == 1, "{drained}");
    ensure!(
        pooled.iter().all(|p| pid_gone(*p))
            || wait_pids_gone(
                &pooled.iter().copied().collect::<Vec<_>>(),
                Duration::from_secs(10)
            )
    );
    assert_nothing_left(&t)
}

#[test]
fn virtc_fills_and_reports_a_shape() -> Result<()> {
    let t = TestRuntime::new()?;
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let bad = virtc.run(["pool", "fill", "1", "--machine", "pc"])?;
    ensure!(
        bad.code != Some(0) && bad.stderr.contains("microvm or q35"),
        "{bad:?}"
    );
    let filled = virtc
        .ok(["--json", "pool", "fill", "1", "--memory-mib", "320"])?
        .json()?;
    let slot = &filled["slots"][0];
    ensure!(
        slot["shape"]["memory_mib"] == 320 && slot["health"] == "ready",
        "{filled}"
    );
    let table = virtc.ok(["pool", "status"])?;
    ensure!(
        table.stdout.contains("ready") && table.stdout.contains("320"),
        "{table:?}"
    );
    // A pod of that shape, through virtc, adopts it.
    virtc.ok(["pod", "create", "shaped", "--memory-mib", "320"])?;
    let started = virtc.ok(["pod", "start", "shaped"])?;
    let pid = slot["processes"][0]["pid"].as_i64().context("pid")?;
    let pod = virtc.ok(["--json", "pod", "status", "shaped"])?.json()?;
    let qemu = pod["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "qemu")
        .and_then(|p| p["pid"].as_i64());
    ensure!(qemu == Some(pid), "{pod}\n{started:?}");
    virtc.ok(["pod", "stop", "shaped"])?;
    virtc.ok(["pod", "delete", "shaped"])?;
    ensure!(virtc.ok(["--json", "pool", "drain"])?.json()?["removed"] == 0);
    assert_nothing_left(&t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_q35_pod_with_a_netns_adopts_a_slot_and_gets_its_nics_hot_plugged() -> Result<()> {
    let t = TestRuntime::new()?;
    let q35 = PoolShape {
        machine: Some(Machine::Q35),
        ..PoolShape::default()
    };
    let filled = t.rt.fill_pool(1, &q35).await?;
    let pooled = slot_pids(&filled);
    let net = Pair::new()?;
    net.second_link()?;
    let before = net.pod.snapshot()?;
    let mut config = t.pod("netq35");
    config.netns = Some(net.pod.path());
    config.vm.machine = Machine::Q35;
    let pod = config.id.clone();
    t.rt.run_pod(config).await?;
    let qemu = qemu_pid(&t, &pod).await?;
    ensure!(
        pooled.contains(&qemu),
        "QEMU {qemu} is not the slot's {pooled:?}"
    );
    ensure!(t.rt.pool_status().await?.slots.is_empty());
    // Both interfaces, hot-plugged at adoption, carry TCP both ways.
    let network = t.rt.pod_network(&pod).await?.context("no network")?;
    ensure!(
        network.links.len() == 2 && network.links.iter().all(|l| l.device.is_some()),
        "{network:?}"
    );
    tcp_both_ways(&t, &pod, &net.peer, "192.0.2.2", "192.0.2.1").await?;
    tcp_both_ways(&t, &pod, &net.peer, "198.51.100.2", "198.51.100.1").await?;
    // The default route of the namespace reached the guest.
    let out = t
        .run_container(&pod, t.container("route", &["/bin/sh", "-c", "ip route"]))
        .await?;
    let routes = String::from_utf8_lossy(&out.stdout);
    ensure!(routes.contains("default via 192.0.2.1"), "{routes}");
    t.rt.stop_pod(&pod).await?;
    ensure!(net.pod.snapshot()? == before, "the namespace changed");
    t.rt.delete_pod(&pod).await?;
    assert_nothing_left(&t)
}
