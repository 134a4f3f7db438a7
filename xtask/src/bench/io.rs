//! `cargo xtask bench io`: process I/O through the library against its floor, in one run.
//!
//! - vc: in a running pod, exec latency of `/bin/true` in a container (stdout and stderr
//!   parked, exec, wait through [`Process::spawn`]; and exec + wait alone), at least 100 runs,
//!   median and p99; the guest's own fork+exec+wait of `/bin/true` (timed inside the guest); stdout
//!   throughput of `dd if=/dev/zero bs=1M count=256` read on the host, on the direct path (the
//!   vsock connection is dd's stdout) and through the agent's pipes (forced), alternating.
//! - floor: the same kernel and vsock modules with a minimal static C init
//!   ([`super::io_floor`]): raw vsock round trip (1 byte, echoed) and guest-to-host throughput
//!   over 256 MiB.
//!
//! Goals (issue 5): exec median under 10 x (vsock round trip + guest fork+exec+wait); stdout
//! throughput at least 0.8 x the raw vsock floor.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use guest_image::{ImagePaths, Manifest};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vc_host::agent::AgentClient;
use vc_host::config::{ContainerConfig, PodConfig};
use vc_host::hypervisor::{Hypervisor, QemuHypervisor, Vm, VmConfig, VmSpec};
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::{Process, StdioPath};
use vc_host::Runtime;
use vc_proto::{ProcessRef, ProcessSpec};

use super::inputs::{rootfs, scratch, tokio_runtime, vc_runtime, Image};
use super::io_floor;
use super::report::{Figure, Goal, Outcome, Unit};
use super::stats::{ms, Summary};
use crate::ctx::{self, Ctx};

/// Bytes moved in each throughput measurement.
const BULK: u64 = 256 << 20;
/// Bulk transfers measured on each side (the median is reported).
const TRANSFERS: usize = 3;
/// Round trips measured on the floor.
const ROUND_TRIPS: usize = 1000;
/// Fewest exec runs, whatever `--runs` says.
const MIN_EXECS: u32 = 100;
/// How long the floor guest gets to listen.
const FLOOR_READY: Duration = Duration::from_secs(60);

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let manifest = image.manifest()?;
    let rootfs = rootfs(ctx)?;
    tokio_runtime()?.block_on(bench(
        &image.dir,
        &image.paths,
        &manifest,
        &rootfs,
        runs.max(MIN_EXECS),
    ))
}

/// The floor's numbers.
#[derive(Debug)]
struct Floor {
    rtt: Summary,
    mb_s: f64,
}

/// vc's numbers.
#[derive(Debug)]
struct Measured {
    spawn: Summary,
    spawn_p99: Duration,
    bare: Summary,
    bare_p99: Duration,
    guest_fork_exec: Duration,
    guest_pipe_mb_s: f64,
    /// `dd if=/dev/zero of=/dev/null` in the guest: what producing the data costs.
    guest_source_mb_s: f64,
    /// stdout on the direct path (the vsock connection is the process's stdout).
    mb_s: f64,
    /// stdout through the agent's pipe and copy (forced; a version-2 agent's path).
    pipe_mb_s: f64,
}

async fn bench(
    image_dir: &Path,
    paths: &ImagePaths,
    manifest: &Manifest,
    rootfs: &Path,
    execs: u32,
) -> Result<Outcome> {
    // Short paths: the VM's sockets must fit in sun_path.
    let tmp = scratch("vi")?;
    ctx::step("building the I/O floor initrd (static C init: vsock echo and source)");
    let floor_initrd = io_floor::build(image_dir, manifest, tmp.path())?;
    ctx::step(
        "booting the floor VM and a pod, both kept running so that their transfers alternate",
    );
    let floor_vm = launch_floor(&paths.kernel, &floor_initrd, tmp.path()).await?;
    let measured = vc(image_dir, rootfs, tmp.path(), execs, &floor_vm).await;
    if let Ok(mut quit) = floor_vm
        .agent_addr()
        .connect(vc_proto::AGENT_VSOCK_PORT)
        .await
    {
        let _ = quit.write_all(b"q").await;
    }
    let stopped = floor_vm.stop(Duration::from_secs(5)).await;
    let (floor, vc) = measured.with_context(|| floor_vm.diagnostics(30))?;
    stopped.context("cannot stop the floor VM")?;

    println!("\nfloor (minimal static init, raw vsock):");
    println!(
        "  round trip 1 byte     median {:>9}  p90 {:>9}  ({ROUND_TRIPS} runs)",
        us(floor.rtt.median),
        us(floor.rtt.p90)
    );
    println!(
        "  guest->host           {:>9.1} MB/s over {} MiB (median of {TRANSFERS})",
        floor.mb_s,
        BULK >> 20
    );
    println!("vc (agent, container, library):");
    println!(
        "  exec /bin/true (Process::spawn: park stdout+stderr, exec, close stdin, wait)\n                        median {:>9}  p99 {:>9}  (min {}, max {}, {execs} runs)",
        ms(vc.spawn.median),
        ms(vc.spawn_p99),
        ms(vc.spawn.min),
        ms(vc.spawn.max)
    );
    println!(
        "  exec + wait only      median {:>9}  p99 {:>9}",
        ms(vc.bare.median),
        ms(vc.bare_p99)
    );
    println!(
        "  guest fork+exec+wait of /bin/true (in the container)  {}",
        ms(vc.guest_fork_exec)
    );
    println!(
        "  stdout of dd bs=1M    {:>9.1} MB/s over {} MiB (median of {TRANSFERS}; direct: the connection is dd's stdout)",
        vc.mb_s,
        BULK >> 20
    );
    println!(
        "  the same via pipes    {:>9.1} MB/s (forced: the agent copies a pipe into the connection)",
        vc.pipe_mb_s
    );
    println!(
        "  in the guest alone: dd bs=1M | dd of=/dev/null: {:.1} MB/s (a pipe, no vsock)",
        vc.guest_pipe_mb_s
    );
    println!(
        "  in the guest alone: dd if=/dev/zero bs=1M of=/dev/null: {:.1} MB/s (producing the data)",
        vc.guest_source_mb_s
    );

    // The goal's sentence reads two ways; both are shown.
    let budget = floor.rtt.median + vc.guest_fork_exec;
    let exec_ratio = vc.spawn.median.as_secs_f64() / budget.as_secs_f64();
    let strict = floor.rtt.median * 10 + vc.guest_fork_exec;
    let tput_ratio = vc.mb_s / floor.mb_s;
    let pipe_tput_ratio = vc.pipe_mb_s / floor.mb_s;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!("goals:");
    println!(
        "  exec median / (vsock round trip + guest fork+exec+wait) = {} / {} = {exec_ratio:.1} (goal < 10: {})",
        ms(vc.spawn.median),
        ms(budget),
        verdict(exec_ratio < 10.0)
    );
    println!(
        "  exec median vs 10 x vsock round trip + guest fork+exec+wait = {} vs {} (goal: under: {})",
        ms(vc.spawn.median),
        ms(strict),
        verdict(vc.spawn.median < strict)
    );
    println!(
        "  stdout throughput / floor = {:.1} / {:.1} MB/s = {tput_ratio:.2} (goal >= 0.8: {})",
        vc.mb_s,
        floor.mb_s,
        verdict(tput_ratio >= 0.8)
    );
    println!(
        "  (the pipe path: {:.1} / {:.1} MB/s = {pipe_tput_ratio:.2})",
        vc.pipe_mb_s, floor.mb_s
    );
    tmp.close()
        .context("cannot remove the temporary directory")?;

    let mut outcome = Outcome::new(
        "io",
        format!(
            "In a running pod: exec of `/bin/true` in a container through `Process::spawn`, \
             {execs} runs; stdout of `dd bs=1M` over {} MiB read on the host (median of \
             {TRANSFERS}). The floor is a VM on the same kernel with a static C init serving raw \
             vsock; both VMs run at once and their transfers alternate.",
            BULK >> 20
        ),
    );
    outcome.figures.push(
        Figure::new("stdout throughput", Unit::MbPerS, vc.mb_s)
            .floor("raw vsock, static C writer", floor.mb_s)
            .goal(Goal::RatioAtLeast(0.8)),
    );
    outcome.figures.push(
        Figure::new(
            "stdout throughput through the agent's pipes (forced)",
            Unit::MbPerS,
            vc.pipe_mb_s,
        )
        .floor("raw vsock, static C writer", floor.mb_s),
    );
    outcome.figures.push(
        Figure::ms("exec /bin/true, median", vc.spawn.median)
            .floor_ms("vsock round trip + guest fork+exec+wait", budget)
            .goal(Goal::RatioAtMost(10.0)),
    );
    outcome
        .figures
        .push(Figure::ms("exec /bin/true, p99", vc.spawn_p99));
    outcome
        .figures
        .push(Figure::ms("exec + wait only, median", vc.bare.median));
    outcome.figures.push(Figure::new(
        "raw vsock round trip (floor), median",
        Unit::Us,
        floor.rtt.median.as_secs_f64() * 1e6,
    ));
    outcome.figures.push(Figure::new(
        "guest pipe alone (reference)",
        Unit::MbPerS,
        vc.guest_pipe_mb_s,
    ));
    outcome.figures.push(Figure::new(
        "dd reading /dev/zero alone in the guest (reference)",
        Unit::MbPerS,
        vc.guest_source_mb_s,
    ));
    Ok(outcome)
}

fn us(d: Duration) -> String {
    format!("{} us", d.as_micros())
}

/// The nearest-rank 99th percentile.
fn p99(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let rank = (s.len() * 99).div_ceil(100).max(1);
    s.get(rank - 1).copied().unwrap_or_default()
}

/// Boots the floor and waits until it listens; a floor that does not is stopped.
async fn launch_floor(kernel: &Path, initrd: &Path, tmp: &Path) -> Result<Vm> {
    let settings = VmConfig {
        kernel: Some(kernel.to_owned()),
        initrd: Some(initrd.to_owned()),
        ..Default::default()
    }
    .validate()
    .context("the VM configuration is not usable on this host (try `cargo xtask deps`)")?;
    let hv = QemuHypervisor::new(tmp.join("state"));
    let vm = hv
        .launch(&VmSpec::new(settings, tmp.join("floor")))
        .await
        .context("cannot launch the floor VM")?;
    let console = vm.record().console_log.clone();
    let until = Instant::now() + FLOOR_READY;
    loop {
        let text = tokio::fs::read(&console).await.unwrap_or_default();
        if String::from_utf8_lossy(&text).contains(io_floor::READY_LINE) {
            return Ok(vm);
        }
        if !vm.is_running() || Instant::now() > until {
            let diagnostics = vm.diagnostics(30);
            let _ = vm.stop(Duration::from_secs(5)).await;
            bail!("the floor guest did not start listening; {diagnostics}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Round trips of one byte through the floor's echo.
async fn floor_rtt(vm: &Vm) -> Result<Summary> {
    let mut echo = vm
        .agent_addr()
        .connect(vc_proto::AGENT_VSOCK_PORT)
        .await
        .context("cannot connect to the floor")?;
    echo.write_all(b"e").await?;
    let mut byte = [0u8; 1];
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + 50 {
        let start = Instant::now();
        echo.write_all(&[i as u8]).await?;
        echo.read_exact(&mut byte)
            .await
            .context("the floor's echo ended")?;
        if i >= 50 {
            rtts.push(start.elapsed());
        }
    }
    Summary::of(&rtts).context("no samples")
}

/// One transfer of [`BULK`] bytes from the floor to the host, in MB/s.
async fn floor_transfer(vm: &Vm) -> Result<f64> {
    let mut source = vm
        .agent_addr()
        .connect(vc_proto::AGENT_VSOCK_PORT)
        .await
        .context("cannot connect to the floor")?;
    let start = Instant::now();
    source.write_all(b"s").await?;
    source.write_all(&BULK.to_le_bytes()).await?;
    let got = drain(&mut source).await?;
    let secs = start.elapsed().as_secs_f64();
    if got != BULK {
        bail!("the floor sent {got} bytes, not {BULK}");
    }
    Ok(got as f64 / secs / 1e6)
}

/// Reads `stream` to end-of-file; returns the byte count.
async fn drain(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await.context("reading the stream")?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Runs a pod, measures it and the floor, and stops and deletes the pod whatever happens.
async fn vc(
    image_dir: &Path,
    rootfs: &Path,
    tmp: &Path,
    execs: u32,
    floor: &Vm,
) -> Result<(Floor, Measured)> {
    let rt = vc_runtime(tmp, image_dir)?;
    let pod = PodId::new("io").context("invalid pod id")?;
    let cid = ContainerId::new("c").context("invalid container id")?;
    let mut config = PodConfig::new(pod.clone());
    config.containers.push(ContainerConfig::new(
        cid.clone(),
        rootfs,
        vec!["sleep".to_owned(), "1000000".to_owned()],
    ));
    rt.run_pod(config).await.context("cannot run the pod")?;
    let measured = measure_vc(&rt, &pod, execs, floor).await;
    let stopped = rt.stop_pod(&pod).await;
    let deleted = rt.delete_pod(&pod).await;
    let m = measured?;
    stopped.context("stop_pod failed")?;
    deleted.context("delete_pod failed")?;
    Ok(m)
}

async fn measure_vc(
    rt: &Runtime,
    pod: &PodId,
    execs: u32,
    floor_vm: &Vm,
) -> Result<(Floor, Measured)> {
    ctx::step("floor: vsock round trips");
    let rtt = floor_rtt(floor_vm).await?;
    ctx::step(format!("vc: {execs} execs of /bin/true"));
    let agent = rt.pod_agent(pod).await.context("cannot reach the agent")?;
    let mut next = 0u32;
    let mut process = |args: &[&str]| {
        next += 1;
        (
            ProcessRef {
                container_id: "c".to_owned(),
                exec_id: Some(format!("bench-{next}")),
            },
            ProcessSpec {
                args: args.iter().map(|s| s.to_string()).collect(),
                env: vec![vc_host::config::DEFAULT_PATH.to_owned()],
                cwd: "/".to_owned(),
                ..ProcessSpec::default()
            },
        )
    };

    // The guest's own cost: 200 fork+exec+wait of /bin/true inside the container, timed there.
    let (r, s) = process(&[
        "sh",
        "-c",
        "a=$(cut -d' ' -f1 /proc/uptime); i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done; \
         b=$(cut -d' ' -f1 /proc/uptime); echo $a $b",
    ]);
    let out = Process::spawn(&agent, r, s, false).await?.output().await?;
    let (a, b) = uptimes(&out.stdout)?;
    let guest_fork_exec = Duration::from_secs_f64(((b - a) / 200.0).max(0.0));

    // Warm up, then exec /bin/true through the library's process handle, and bare.
    for _ in 0..5 {
        let (r, s) = process(&["/bin/true"]);
        Process::spawn(&agent, r, s, false).await?.wait().await?;
    }
    let mut spawn = Vec::new();
    let mut bare = Vec::new();
    for _ in 0..execs {
        let (r, s) = process(&["/bin/true"]);
        let start = Instant::now();
        let p = Process::spawn(&agent, r, s, false).await?;
        let code = p.wait().await?;
        spawn.push(start.elapsed());
        if code != 0 {
            bail!("/bin/true exited {code}");
        }
        let (r, s) = process(&["/bin/true"]);
        let start = Instant::now();
        agent.exec(&r, s).await?;
        agent.wait(&r).await?;
        bare.push(start.elapsed());
    }

    // The guest's own pipe, dd into dd, and dd's own production of its data (reading /dev/zero)
    // alone, both timed in the guest.
    let count = format!("count={}", BULK >> 20);
    let source = format!("dd if=/dev/zero bs=1048576 {count}");
    let pipe = format!("{source} 2>/dev/null | dd of=/dev/null bs=1048576");
    let guest_pipe_mb_s = guest_rate(&agent, process(&["sh", "-c", &in_guest(&pipe)])).await?;
    let alone = format!("{source} of=/dev/null");
    let guest_source_mb_s = guest_rate(&agent, process(&["sh", "-c", &in_guest(&alone)])).await?;

    // Throughput, floor and vc alternating: dd writes 1 MiB at a time to its stdout; time from
    // exec to end-of-file.
    ctx::step(format!(
        "{TRANSFERS} x {} MiB guest to host, floor and vc alternating",
        BULK >> 20
    ));
    let mut rates = Vec::new();
    let mut pipe_rates = Vec::new();
    let mut floor_rates = Vec::new();
    for _ in 0..TRANSFERS {
        floor_rates.push(floor_transfer(floor_vm).await?);
        for (path, rates) in [
            (StdioPath::Direct, &mut rates),
            (StdioPath::Pipes, &mut pipe_rates),
        ] {
            let (r, s) = process(&["dd", "if=/dev/zero", "bs=1048576", &count]);
            let start = Instant::now();
            let mut p = Process::spawn_with(&agent, r, s, false, path).await?;
            let mut stdout = p.stdout.take().context("no stdout")?;
            let got = drain(&mut stdout).await?;
            let secs = start.elapsed().as_secs_f64();
            let code = p.wait().await?;
            if got != BULK || code != 0 {
                bail!("dd ({path:?}) gave {got} bytes and exit code {code}");
            }
            rates.push(got as f64 / secs / 1e6);
        }
    }
    let floor = Floor {
        rtt,
        mb_s: median(&mut floor_rates),
    };
    let measured = Measured {
        spawn: Summary::of(&spawn).context("no samples")?,
        spawn_p99: p99(&spawn),
        bare: Summary::of(&bare).context("no samples")?,
        bare_p99: p99(&bare),
        guest_fork_exec,
        guest_pipe_mb_s,
        guest_source_mb_s,
        mb_s: median(&mut rates),
        pipe_mb_s: median(&mut pipe_rates),
    };
    Ok((floor, measured))
}

/// `command` (moving [`BULK`] bytes) between two reads of the guest's uptime, printed.
fn in_guest(command: &str) -> String {
    format!(
        "a=$(cut -d' ' -f1 /proc/uptime); {command} 2>/dev/null; \
         b=$(cut -d' ' -f1 /proc/uptime); echo $a $b"
    )
}

/// Runs an [`in_guest`] script; the MB/s it timed.
async fn guest_rate(agent: &AgentClient, (r, s): (ProcessRef, ProcessSpec)) -> Result<f64> {
    let out = Process::spawn(agent, r, s, false).await?.output().await?;
    Ok(match uptimes(&out.stdout)? {
        (a, b) if b > a => BULK as f64 / (b - a) / 1e6,
        _ => f64::NAN,
    })
}

/// The median of a few rates.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The two `/proc/uptime` readings a timing script printed.
fn uptimes(stdout: &[u8]) -> Result<(f64, f64)> {
    let text = String::from_utf8_lossy(stdout);
    let times: Vec<f64> = text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    match times[..] {
        [a, b] => Ok((a, b)),
        _ => bail!("unexpected guest timing output {text:?}"),
    }
}
