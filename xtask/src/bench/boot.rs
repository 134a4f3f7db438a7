//! `cargo xtask bench boot`: QEMU spawn to agent handshake done, for the guest image (vc-agent
//! as PID 1) and for its floor (the same kernel and modules with a minimal static init, see
//! [`super::floor`]). As the library does, the host waits for the ready line on the console
//! before it connects (both inits print it once they listen). Runs alternate between the two,
//! one VM at a time; every VM is stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use guest_image::{ImagePaths, Manifest};
use vc_host::agent::{AgentClient, ConnectOptions};
use vc_host::hypervisor::console::ConsoleWatch;
use vc_host::hypervisor::{Hypervisor, QemuHypervisor, Vm, VmConfig, VmSettings, VmSpec};

use super::floor;
use super::inputs::{scratch, tokio_runtime, Image};
use super::report::{Figure, Goal, Outcome};
use super::stats::{ms, Summary};
use crate::ctx::{self, Ctx};

/// How long a VM gets to power itself off before it is stopped.
const EXIT_WAIT: Duration = Duration::from_secs(5);
/// Timeout of [`vc_host::hypervisor::Vm::stop`].
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Console lines shown when a VM does not answer.
const DIAG_LINES: usize = 30;
/// Goal: vc at most this many times the floor.
const GOAL_RATIO: f64 = 1.1;
/// How long a VM gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Console polling interval while waiting for the ready line.
const READY_POLL: Duration = Duration::from_millis(2);

/// One of the two measured guests.
#[derive(Debug)]
struct Target {
    /// Short name, also the run directory prefix.
    name: &'static str,
    /// The validated VM settings.
    settings: VmSettings,
    /// Whether the guest runs vc-agent (asked to shut down) or the floor init (powers off when
    /// the connection closes).
    agent: bool,
    /// Boot times.
    samples: Vec<Duration>,
}

/// The floor's name in reports.
const FLOOR_NAME: &str = "same kernel and vsock modules, static C init";

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let manifest = image.manifest()?;
    tokio_runtime()?.block_on(bench(&image.dir, &image.paths, &manifest, runs))
}

async fn bench(
    image_dir: &Path,
    paths: &ImagePaths,
    manifest: &Manifest,
    runs: u32,
) -> Result<Outcome> {
    // Short paths: the VM's sockets must fit in sun_path.
    let tmp = scratch("vb")?;
    ctx::step("building the floor initrd (static C init, vsock modules)");
    let floor_initrd = floor::build(image_dir, manifest, tmp.path()).await?;

    let mut targets = [
        Target {
            name: "vc",
            settings: settings(&paths.kernel, &paths.initrd)?,
            agent: true,
            samples: Vec::new(),
        },
        Target {
            name: "floor",
            settings: settings(&paths.kernel, &floor_initrd)?,
            agent: false,
            samples: Vec::new(),
        },
    ];
    let s = &targets[0].settings;
    let shape = format!("{} vCPU, {} MiB, {:?}", s.vcpus, s.memory_mib, s.machine);
    ctx::step(format!(
        "booting {runs} times each, alternating (kernel {}, {} vCPU, {} MiB, {:?}, {:?}, vsock {:?})",
        manifest.kernel_version, s.vcpus, s.memory_mib, s.machine, s.accel, s.vsock
    ));
    let hv = QemuHypervisor::new(tmp.path().join("state"));

    // One unmeasured boot each first, so that both start with warm caches.
    for t in &targets {
        boot_once(&hv, t, &tmp.path().join(format!("{}w", t.name)))
            .await
            .with_context(|| format!("warm-up boot of {} failed", t.name))?;
    }
    for i in 0..runs {
        for t in &mut targets {
            let run_dir = tmp.path().join(format!("{}{i}", t.name));
            let d = boot_once(&hv, t, &run_dir)
                .await
                .with_context(|| format!("{} boot {} failed", t.name, i + 1))?;
            println!("  run {:>2} {:<5} {}", i + 1, t.name, ms(d));
            t.samples.push(d);
        }
    }

    println!("\nQEMU spawn to handshake done, {runs} runs each:");
    let mut medians = Vec::new();
    for t in &targets {
        let s = Summary::of(&t.samples).context("no samples")?;
        println!(
            "  {:<5} median {:>9}  p90 {:>9}  (min {}, max {})",
            t.name,
            ms(s.median),
            ms(s.p90),
            ms(s.min),
            ms(s.max)
        );
        medians.push(s);
    }
    let (vc, fl) = (medians[0], medians[1]);
    let ratio = vc.median.as_secs_f64() / fl.median.as_secs_f64();
    let ratio90 = vc.p90.as_secs_f64() / fl.p90.as_secs_f64();
    let verdict = if ratio <= GOAL_RATIO {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "  ratio vc/floor: median {ratio:.2}, p90 {ratio90:.2} (goal <= {GOAL_RATIO}: {verdict})"
    );

    let mut outcome = Outcome::new(
        "boot",
        format!(
            "QEMU spawn to agent handshake done (after the ready line), {runs} runs each, \
             alternating with the floor: the same kernel and vsock modules with a minimal static \
             C init. Kernel {}, {shape}.",
            manifest.kernel_version
        ),
    );
    outcome.figures.push(
        Figure::ms("boot, median", vc.median)
            .floor_ms(FLOOR_NAME, fl.median)
            .goal(Goal::RatioAtMost(GOAL_RATIO)),
    );
    outcome
        .figures
        .push(Figure::ms("boot, p90", vc.p90).floor_ms(FLOOR_NAME, fl.p90));
    for t in &targets {
        let series = if t.agent {
            "vc (vc-agent)"
        } else {
            "floor (static init)"
        };
        outcome.durations_ms("boot time", series, &t.samples);
    }
    Ok(outcome)
}

/// Validated settings of a VM booting `kernel` with `initrd`, otherwise the defaults.
fn settings(kernel: &Path, initrd: &Path) -> Result<VmSettings> {
    VmConfig {
        kernel: Some(kernel.to_owned()),
        initrd: Some(initrd.to_owned()),
        ..Default::default()
    }
    .validate()
    .context("the VM configuration is not usable on this host (try `cargo xtask deps`)")
}

/// Boots `t` once in `run_dir` and returns the time from just before launch to the handshake
/// done. The VM is stopped whatever happens.
async fn boot_once(hv: &QemuHypervisor, t: &Target, run_dir: &Path) -> Result<Duration> {
    let spec = VmSpec::new(t.settings.clone(), run_dir);
    let start = Instant::now();
    let vm = hv.launch(&spec).await.context("cannot launch the VM")?;
    let qemu = vm.record().qemu;
    let opts = ConnectOptions::default().vm_alive(move || qemu.is_alive());
    let connected = match wait_ready(&vm).await {
        Ok(()) => AgentClient::connect(vm.agent_addr(), &opts)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let elapsed = start.elapsed();
    let outcome = match connected {
        Ok(client) => {
            if t.agent {
                client.shutdown().await.ok();
            }
            // The floor init powers off once the connection closes.
            drop(client);
            vm.wait_exit(EXIT_WAIT).await;
            Ok(elapsed)
        }
        Err(e) => Err(e.context(format!(
            "no handshake after {}; {}",
            ms(elapsed),
            vm.diagnostics(DIAG_LINES)
        ))),
    };
    let stopped = vm.stop(STOP_TIMEOUT).await;
    let d = outcome?;
    stopped.context("cannot stop the VM")?;
    Ok(d)
}

/// Waits until the console shows the agent's ready line, as the library does before its first
/// connection; fails when QEMU dies or [`READY_TIMEOUT`] passes.
async fn wait_ready(vm: &Vm) -> Result<()> {
    let mut watch = ConsoleWatch::new(&vm.record().console_log, 1 << 20);
    let start = Instant::now();
    while !watch.poll(vc_proto::AGENT_READY_LINE.as_bytes()) {
        if !vm.record().qemu.is_alive() {
            bail!("QEMU exited before the ready line");
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("no ready line within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(READY_POLL).await;
    }
    Ok(())
}
