//! `cargo xtask bench density [--pods N]`: N idle pods on one host, each with a sleeping
//! container, and what they cost. Reports:
//! - start time (`run_pod`: create, boot, container started), the first half of the pods one
//!   after another, the second half all at once (through the runtime's boot admission);
//! - host PSS (`/proc/<pid>/smaps_rollup`) per process kind and per pod, against the goal of
//!   issue 14 (64 MiB per idle pod);
//! - the guest's own view: memory used (total minus `MemAvailable`);
//! - exec latency of `/bin/true` with the N pods idle;
//! - host CPU of the pods' processes while they idle;
//!
//! then the same figures after every pod has written and removed 100 MiB of tmpfs (memory the
//! guest allocates and frees: with free page reporting it goes back to the host).
//!
//! PSS is read once the pods' total has settled (two samples [`SETTLE_STEP`] apart within 2%),
//! as free page reporting works seconds after the guest frees. Every pod is stopped and deleted,
//! even when a step fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use vc_host::config::{ContainerConfig, PodConfig, RuntimeConfig};
use vc_host::hypervisor::VmConfig;
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::Process;
use vc_host::Runtime;
use vc_proto::{ProcessRef, ProcessSpec};

use super::inputs::{rootfs, scratch, tokio_runtime, Image};
use super::plot::{DENSITY_AFTER, DENSITY_IDLE};
use super::procfs::{cpu_ticks, pss_kib, ticks_per_second};
use super::report::{Figure, Goal, Outcome, Unit};
use super::stats::{ms, Summary};
use crate::ctx::{self, Ctx};

/// The goal of issue 14: host PSS per idle pod at the defaults.
const GOAL_PSS_MIB: f64 = 64.0;
/// Interval between two PSS samples while waiting for them to settle.
const SETTLE_STEP: Duration = Duration::from_secs(3);
/// Longest wait for PSS to settle.
const SETTLE_MAX: Duration = Duration::from_secs(60);
/// Window over which idle CPU is measured.
const CPU_WINDOW: Duration = Duration::from_secs(10);
/// Execs of `/bin/true` per pod for the latency figure.
const EXECS_PER_POD: usize = 5;
/// What each pod allocates and frees in the second round, in MiB.
const ALLOC_MIB: u32 = 100;
/// The container in every pod.
const CONTAINER: &str = "c";

/// What `bench density` is asked for.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    /// Pods to start.
    pub pods: u32,
    /// TCG translation cache size (MiB); `None` keeps the library's default.
    pub tb_size_mib: Option<u32>,
    /// Turn free page reporting (the balloon) off.
    pub no_free_page_reporting: bool,
    /// Extra guest kernel arguments.
    pub kernel_args: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx, knobs: &Knobs) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let rootfs = rootfs(ctx)?;
    tokio_runtime()?.block_on(bench(&image.dir, &rootfs, knobs))
}

async fn bench(image_dir: &Path, rootfs: &Path, knobs: &Knobs) -> Result<Outcome> {
    // Short paths: the VM's sockets must fit in sun_path.
    let tmp = scratch("vd")?;
    let config = RuntimeConfig {
        root: tmp.path().join("r"),
        guest_image_dir: image_dir.to_owned(),
        ..RuntimeConfig::default()
    };
    let mut vm = VmConfig::default();
    if let Some(mib) = knobs.tb_size_mib {
        vm.tcg_tb_size_mib = mib;
    }
    vm.free_page_reporting = !knobs.no_free_page_reporting;
    vm.kernel_args.extend(knobs.kernel_args.iter().cloned());
    ctx::step(format!(
        "{} idle pods ({} vCPU, {} MiB, tb-size {} MiB, free page reporting {}, kernel args {:?}), \
         each with `sleep` in a container",
        knobs.pods,
        vm.vcpus,
        vm.memory_mib,
        vm.tcg_tb_size_mib,
        if vm.free_page_reporting { "on" } else { "off" },
        vm.kernel_args
    ));
    let about = format!(
        "{} idle pods ({} vCPU, {} MiB, tb-size {} MiB, free page reporting {}), each with \
         `sleep` in a container: the first half started one after another, the rest at once; \
         host PSS once settled, then again after each pod wrote and removed {ALLOC_MIB} MiB.",
        knobs.pods,
        vm.vcpus,
        vm.memory_mib,
        vm.tcg_tb_size_mib,
        if vm.free_page_reporting { "on" } else { "off" },
    );
    let rt = Runtime::new(config).context("cannot open the runtime root")?;
    let ids: Vec<PodId> = (0..knobs.pods)
        .map(|i| PodId::new(format!("d{i}")))
        .collect::<Result<_, _>>()
        .context("invalid pod id")?;
    let mut outcome = Outcome::new("density", about);
    outcome.pods = Some(knobs.pods);
    let result = measure(&rt, &ids, rootfs, &vm, &mut outcome).await;
    // Whatever happened, leave nothing running.
    for id in &ids {
        let _ = rt.stop_pod(id).await;
        let _ = rt.delete_pod(id).await;
    }
    let cleanup = tmp.close();
    result?;
    cleanup.context("cannot remove the temporary directory")?;
    Ok(outcome)
}

async fn measure(
    rt: &Runtime,
    ids: &[PodId],
    rootfs: &Path,
    vm: &VmConfig,
    outcome: &mut Outcome,
) -> Result<()> {
    let half = ids.len().div_ceil(2);
    let (sequential, concurrent) = ids.split_at(half);
    ctx::step(format!(
        "starting {} pods one after another",
        sequential.len()
    ));
    let mut seq = Vec::new();
    for id in sequential {
        seq.push(start_pod(rt, id, rootfs, vm).await?);
    }
    ctx::step(format!("starting {} pods at once", concurrent.len()));
    let batch = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for id in concurrent {
        let (rt, id, rootfs, vm) = (rt.clone(), id.clone(), rootfs.to_owned(), vm.clone());
        tasks.spawn(async move { start_pod(&rt, &id, &rootfs, &vm).await });
    }
    let mut conc = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        conc.push(joined.context("a start task panicked")??);
    }
    let batch = batch.elapsed();

    println!("\nstart (run_pod: create, boot, container started):");
    if let Some(s) = Summary::of(&seq) {
        println!(
            "  one after another ({:>2} pods)  median {:>9}  (min {}, max {})",
            seq.len(),
            ms(s.median),
            ms(s.min),
            ms(s.max)
        );
    }
    if let Some(s) = Summary::of(&conc) {
        println!(
            "  all at once       ({:>2} pods)  median {:>9}  (max {}, batch {})",
            conc.len(),
            ms(s.median),
            ms(s.max),
            ms(batch)
        );
    }
    if let Some(s) = Summary::of(&seq) {
        outcome
            .figures
            .push(Figure::ms("start, one after another, median", s.median));
    }
    if let Some(s) = Summary::of(&conc) {
        outcome
            .figures
            .push(Figure::ms("start, all at once, median", s.median));
    }
    let mut starts = seq.clone();
    starts.extend(&conc);
    outcome.durations_ms("start time", "run_pod", &starts);

    let idle = snapshot(rt, ids, "idle").await?;
    idle.print(ids.len());
    idle.report(ids.len(), DENSITY_IDLE, outcome);

    ctx::step(format!(
        "each pod writes and removes {ALLOC_MIB} MiB of tmpfs"
    ));
    for id in ids {
        let script = format!(
            "dd if=/dev/zero of=/dev/shm/density bs=1M count={ALLOC_MIB} 2>/dev/null && rm /dev/shm/density"
        );
        let (code, _) = exec(rt, id, &["sh", "-c", &script], "alloc").await?;
        if code != 0 {
            bail!("the {ALLOC_MIB} MiB allocation in pod {id} exited with {code}");
        }
    }
    let after = snapshot(rt, ids, "after").await?;
    after.print(ids.len());
    after.report(ids.len(), DENSITY_AFTER, outcome);
    Ok(())
}

/// Starts pod `id` with a sleeping container; returns how long `run_pod` took.
async fn start_pod(rt: &Runtime, id: &PodId, rootfs: &Path, vm: &VmConfig) -> Result<Duration> {
    let mut config = PodConfig::new(id.clone());
    config.vm = vm.clone();
    let mut container = ContainerConfig::new(
        ContainerId::new(CONTAINER).context("invalid container id")?,
        rootfs,
        vec!["sleep".to_owned(), "1000000".to_owned()],
    );
    // Room for the allocation in /dev/shm (64 MiB by default).
    container.shm_size_bytes = Some(u64::from(ALLOC_MIB + 16) << 20);
    config.containers.push(container);
    let start = Instant::now();
    rt.run_pod(config)
        .await
        .with_context(|| format!("cannot run pod {id}"))?;
    Ok(start.elapsed())
}

/// Runs `args` in pod `id`'s container; returns the exit code and how long the exec took.
async fn exec(rt: &Runtime, id: &PodId, args: &[&str], tag: &str) -> Result<(i32, Duration)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let agent = rt.pod_agent(id).await.context("cannot reach the agent")?;
    let process = ProcessRef {
        container_id: CONTAINER.to_owned(),
        exec_id: Some(format!("{tag}-{}", NEXT.fetch_add(1, Ordering::Relaxed))),
    };
    let spec = ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![vc_host::config::DEFAULT_PATH.to_owned()],
        cwd: "/".to_owned(),
        ..ProcessSpec::default()
    };
    let start = Instant::now();
    let out = Process::spawn(&agent, process, spec, false)
        .await
        .with_context(|| format!("cannot exec in pod {id}"))?
        .output()
        .await
        .with_context(|| format!("exec in pod {id} failed"))?;
    Ok((out.exit_code, start.elapsed()))
}

/// The figures of one moment.
struct Snapshot {
    /// Which moment.
    label: &'static str,
    /// Total PSS per process kind over all pods, KiB.
    by_kind: BTreeMap<String, u64>,
    /// PSS per pod, KiB.
    per_pod: Vec<u64>,
    /// Guest memory used per pod (total minus available), bytes.
    guest_used: Vec<u64>,
    /// Execs of `/bin/true`.
    execs: Vec<Duration>,
    /// CPU of all pods' processes while idle, percent of one host CPU.
    cpu_percent: f64,
}

/// Waits for PSS to settle, then takes every figure.
async fn snapshot(rt: &Runtime, ids: &[PodId], label: &'static str) -> Result<Snapshot> {
    ctx::step(format!("{label}: waiting for PSS to settle"));
    let waited = Instant::now();
    let mut last = pss(rt, ids).await?;
    loop {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = pss(rt, ids).await?;
        let (a, b) = (total(&last.1) as f64, total(&now.1) as f64);
        last = now;
        if (a - b).abs() <= 0.02 * a.max(1.0) || waited.elapsed() > SETTLE_MAX {
            break;
        }
    }
    let settle = waited.elapsed();
    ctx::step(format!(
        "{label}: settled after {:.0} s; idle CPU over {} s",
        settle.as_secs_f64(),
        CPU_WINDOW.as_secs()
    ));
    let pids = pids(rt, ids).await?;
    let before: u64 = pids.iter().filter_map(|(_, p)| cpu_ticks(*p).ok()).sum();
    let window = Instant::now();
    tokio::time::sleep(CPU_WINDOW).await;
    let after: u64 = pids.iter().filter_map(|(_, p)| cpu_ticks(*p).ok()).sum();
    let cpu_percent =
        (after.saturating_sub(before)) as f64 / ticks_per_second() / window.elapsed().as_secs_f64()
            * 100.0;

    let mut guest_used = Vec::new();
    for id in ids {
        let agent = rt.pod_agent(id).await.context("cannot reach the agent")?;
        let total = agent.guest_details().await?.memory_bytes;
        let available = agent.health().await?.memory_available_bytes;
        guest_used.push(total.saturating_sub(available));
    }
    let mut execs = Vec::new();
    for id in ids {
        for _ in 0..EXECS_PER_POD {
            let (code, d) = exec(rt, id, &["/bin/true"], "lat").await?;
            if code != 0 {
                bail!("/bin/true in pod {id} exited with {code}");
            }
            execs.push(d);
        }
    }
    let (by_kind, per_pod) = last;
    Ok(Snapshot {
        label,
        by_kind,
        per_pod,
        guest_used,
        execs,
        cpu_percent,
    })
}

fn total(per_pod: &[u64]) -> u64 {
    per_pod.iter().sum()
}

/// The host processes of every pod: (kind, pid).
async fn pids(rt: &Runtime, ids: &[PodId]) -> Result<Vec<(String, i32)>> {
    let mut out = Vec::new();
    for id in ids {
        let status = rt.pod_status(id).await?;
        out.extend(status.processes.into_iter().map(|p| (p.name, p.pid)));
    }
    Ok(out)
}

/// PSS in KiB: total per process kind, and per pod.
async fn pss(rt: &Runtime, ids: &[PodId]) -> Result<(BTreeMap<String, u64>, Vec<u64>)> {
    let mut by_kind = BTreeMap::new();
    let mut per_pod = Vec::new();
    for id in ids {
        let status = rt.pod_status(id).await?;
        let mut pod = 0;
        for p in status.processes {
            let kib = pss_kib(p.pid)?;
            *by_kind.entry(p.name).or_insert(0) += kib;
            pod += kib;
        }
        per_pod.push(pod);
    }
    Ok((by_kind, per_pod))
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

impl Snapshot {
    /// Adds this moment's figures to `outcome`; `pss_name` names the PSS per pod figure.
    fn report(&self, pods: usize, pss_name: &str, outcome: &mut Outcome) {
        let n = pods.max(1) as f64;
        let label = self.label;
        let mut pss = Figure::new(
            pss_name,
            Unit::Mib,
            total(&self.per_pod) as f64 / n / 1024.0,
        );
        if label == "idle" {
            pss = pss.goal(Goal::AtMost(GOAL_PSS_MIB));
        }
        outcome.figures.push(pss);
        for (kind, kib) in &self.by_kind {
            outcome.figures.push(Figure::new(
                format!("{label}: PSS per pod of {kind}"),
                Unit::Mib,
                *kib as f64 / n / 1024.0,
            ));
        }
        outcome.figures.push(Figure::new(
            format!("{label}: guest-reported used"),
            Unit::Mib,
            self.guest_used.iter().sum::<u64>() as f64 / n / f64::from(1u32 << 20),
        ));
        if let Some(s) = Summary::of(&self.execs) {
            outcome.figures.push(Figure::ms(
                format!("{label}: exec /bin/true, median"),
                s.median,
            ));
        }
        outcome.figures.push(Figure::new(
            format!("{label}: host CPU per pod"),
            Unit::CpuPercent,
            self.cpu_percent / n,
        ));
    }

    fn print(&self, pods: usize) {
        let n = pods.max(1) as f64;
        println!("\n{} ({pods} pods):", self.label);
        println!("  host PSS per pod, by process:");
        for (kind, kib) in &self.by_kind {
            println!("    {kind:<20} {:>10}", mib(*kib as f64 / n));
        }
        let mean = total(&self.per_pod) as f64 / n;
        let min = self.per_pod.iter().min().copied().unwrap_or(0);
        let max = self.per_pod.iter().max().copied().unwrap_or(0);
        println!(
            "  host PSS per pod     {:>10}  (min {}, max {})",
            mib(mean),
            mib(min as f64),
            mib(max as f64)
        );
        let used = self.guest_used.iter().sum::<u64>() as f64 / n / 1024.0;
        println!(
            "  guest-reported used  {:>10}  (MemTotal - MemAvailable)",
            mib(used)
        );
        if let Some(s) = Summary::of(&self.execs) {
            println!(
                "  exec /bin/true       median {:>9}  p90 {:>9}  ({} execs, {pods} pods idle)",
                ms(s.median),
                ms(s.p90),
                self.execs.len()
            );
        }
        println!(
            "  host CPU while idle  {:.1}% of one CPU for all pods ({:.2}% per pod)",
            self.cpu_percent,
            self.cpu_percent / n
        );
        let ratio = mean / 1024.0 / GOAL_PSS_MIB;
        let verdict = if ratio <= 1.0 { "met" } else { "NOT met" };
        println!("  ratio PSS per pod / {GOAL_PSS_MIB} MiB goal: {ratio:.2} ({verdict})");
    }
}
