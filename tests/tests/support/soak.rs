//! The soak engine behind `tests/soak_cycles.rs` and `cargo xtask soak`:
//! cycles of a pod's whole life through the library in this process (create,
//! start, a container with a volume, an exec that reads and writes the volume,
//! an update checked inside the guest, stop, delete), every other pod in a
//! network namespace, and after every [`ACCOUNT_EVERY`] cycles (and after the
//! last) a leak accounting ([`super::account`]) that must come out zero.
//!
//! Network: the pods' namespace has a veth to a peer namespace, 192.0.2.2/24
//! and 192.0.2.1/24, both made here; nothing is routed to the host's interfaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use vc_host::config::{ResourcesConfig, VolumeConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::ProcessConfig;

use super::account::{Baseline, Ledger, Scope};
use super::net::{veth, End, Netns};
use super::pod::TestRuntime;

/// Cycles between two accountings.
pub const ACCOUNT_EVERY: u32 = 10;

/// The longest one cycle may take (a TCG cycle takes about 15 s).
pub const CYCLE_DEADLINE: Duration = Duration::from_secs(300);

/// The pids limit the update sets, read back inside the guest.
const PIDS_LIMIT: u64 = 64;

/// The memory limit the update sets.
const MEMORY_LIMIT: u64 = 96 << 20;

/// One accounting: after which cycle, when, and what it found.
#[derive(Debug)]
pub struct Accounting {
    /// Cycles done.
    pub after: u32,
    /// Time since the first cycle began.
    pub elapsed: Duration,
    /// What was left.
    pub ledger: Ledger,
}

/// What a soak did.
#[derive(Debug, Default)]
pub struct Report {
    /// Each cycle's duration, and whether its pod had a network namespace.
    pub cycles: Vec<(Duration, bool)>,
    /// The accountings, in order.
    pub accountings: Vec<Accounting>,
    /// The whole run.
    pub elapsed: Duration,
}

impl Report {
    /// Cycle times: count, mean, min, median, max, and the mean with and without a namespace.
    pub fn summary(&self) -> String {
        let mut all: Vec<f64> = self.cycles.iter().map(|c| c.0.as_secs_f64()).collect();
        all.sort_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().fold(0.0, |a, b| a + b) / v.len().max(1) as f64;
        let pick = |net: bool| -> Vec<f64> {
            self.cycles
                .iter()
                .filter(|c| c.1 == net)
                .map(|c| c.0.as_secs_f64())
                .collect()
        };
        format!(
            "{} cycles in {:.0} s; a cycle took mean {:.1} s, min {:.1} s, median {:.1} s, \
             max {:.1} s (without a namespace {:.1} s, in a namespace {:.1} s); {} accountings, \
             {} leftovers in all",
            all.len(),
            self.elapsed.as_secs_f64(),
            mean(&all),
            all.first().copied().unwrap_or(0.0),
            all.get(all.len() / 2).copied().unwrap_or(0.0),
            all.last().copied().unwrap_or(0.0),
            mean(&pick(false)),
            mean(&pick(true)),
            self.accountings.len(),
            self.accountings
                .iter()
                .map(|a| a.ledger.total())
                .sum::<usize>(),
        )
    }
}

/// A runtime, the pods' network namespace and a scratch directory for volumes.
#[derive(Debug)]
pub struct Soak {
    t: TestRuntime,
    pod_ns: Netns,
    _peer_ns: Netns,
    scratch: tempfile::TempDir,
}

impl Soak {
    /// Opens a runtime on a fresh root and makes the namespaces.
    pub fn new() -> Result<Self> {
        let t = TestRuntime::new()?;
        let pod_ns = Netns::new("s")?;
        let peer_ns = Netns::new("t")?;
        veth(
            &End {
                ns: &pod_ns,
                name: "eth0",
                mac: "02:00:c0:00:02:02",
                addr: "192.0.2.2/24",
            },
            &End {
                ns: &peer_ns,
                name: "p0",
                mac: "02:00:c0:00:02:01",
                addr: "192.0.2.1/24",
            },
        )?;
        pod_ns.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"])?;
        let scratch = tempfile::Builder::new()
            .prefix("vcsoak")
            .tempdir_in("/tmp")
            .context("cannot create the scratch directory")?;
        Ok(Self {
            t,
            pod_ns,
            _peer_ns: peer_ns,
            scratch,
        })
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            t: &self.t,
            netns: &self.pod_ns,
            scratch: self.scratch.path(),
        }
    }

    /// Runs `cycles` cycles, accounting after every [`ACCOUNT_EVERY`] and
    /// after the last; prints each cycle and each accounting's table. Fails
    /// at the first cycle that fails or accounting that finds a leftover.
    pub fn run(&self, cycles: u32) -> Result<Report> {
        let tokio_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let base = self.scope().baseline()?;
        self.scope().calibrate(&base)?;
        eprintln!("soak: the accounting sees a planted leftover in each category");
        let start = Instant::now();
        let mut report = Report::default();
        for i in 1..=cycles {
            let netns = i % 2 == 0;
            let began = Instant::now();
            tokio_rt
                .block_on(async {
                    tokio::time::timeout(CYCLE_DEADLINE, self.cycle(i, netns))
                        .await
                        .with_context(|| format!("cycle {i} took over {CYCLE_DEADLINE:?}"))?
                })
                .with_context(|| format!("soak cycle {i} of {cycles} failed"))?;
            let took = began.elapsed();
            report.cycles.push((took, netns));
            eprintln!(
                "soak: cycle {i}/{cycles}{} {:.1} s",
                if netns { " (netns)" } else { "" },
                took.as_secs_f64()
            );
            if i % ACCOUNT_EVERY == 0 || i == cycles {
                self.account(&base, i, start.elapsed(), &mut report)?;
            }
        }
        report.elapsed = start.elapsed();
        eprintln!("soak: {}", report.summary());
        Ok(report)
    }

    fn account(
        &self,
        base: &Baseline,
        after: u32,
        elapsed: Duration,
        r: &mut Report,
    ) -> Result<()> {
        let ledger = self.scope().account(base)?;
        eprintln!(
            "soak: accounting after cycle {after} ({:.0} s): {} left\n{}",
            elapsed.as_secs_f64(),
            ledger.total(),
            ledger.table()
        );
        let clean = ledger.ensure_clean(&format!("after cycle {after}"));
        r.accountings.push(Accounting {
            after,
            elapsed,
            ledger,
        });
        clean
    }

    /// One pod's life; checks what each step must have done.
    async fn cycle(&self, i: u32, netns: bool) -> Result<()> {
        let rt = &self.t.rt;
        let pod = PodId::new(format!("soak{i}"))?;
        let mut config = self.t.pod(pod.as_str());
        if netns {
            config.netns = Some(self.pod_ns.path());
        }
        rt.create_pod(config).await.context("create")?;
        rt.start_pod(&pod).await.context("start")?;

        // A container with a volume: a host directory holding a token.
        let vol = self.scratch.path().join(format!("vol{i}"));
        std::fs::create_dir(&vol)?;
        let token = format!("soak-{i}-{}", std::process::id());
        std::fs::write(vol.join("token"), &token)?;
        let c = ContainerId::new("main")?;
        let mut cc = self.t.container(c.as_str(), &["/bin/sleep", "3600"]);
        cc.volumes.push(VolumeConfig {
            host_path: vol.clone(),
            container_path: "/data".to_owned(),
            readonly: false,
        });
        rt.create_container(&pod, cc)
            .await
            .context("create container")?;
        rt.start_container(&pod, &c)
            .await
            .context("start container")?;

        // An exec reads the token and writes through the volume, and lists
        // the guest's interfaces: eth0 only when the pod has a namespace.
        let out = self
            .exec(
                &pod,
                &c,
                "cat /data/token && echo && echo back > /data/back && ls /sys/class/net",
            )
            .await?;
        let mut lines = out.lines();
        ensure!(
            lines.next() == Some(token.as_str()),
            "the exec read {out:?}, not the token {token}"
        );
        let links: Vec<&str> = lines.collect();
        ensure!(
            links.contains(&"eth0") == netns,
            "the guest's interfaces are {links:?} for a pod {} a namespace",
            if netns { "with" } else { "without" }
        );
        let back = std::fs::read_to_string(vol.join("back"))?;
        ensure!(back == "back\n", "the host reads {back:?} from the volume");

        // An update, seen by the container's cgroup in the guest.
        let update = ResourcesConfig {
            memory_limit_bytes: Some(MEMORY_LIMIT),
            pids_limit: Some(PIDS_LIMIT),
            ..ResourcesConfig::default()
        };
        let merged = rt
            .update_container(&pod, &c, &update)
            .await
            .context("update")?;
        ensure!(
            merged.pids_limit == Some(PIDS_LIMIT),
            "the update returned {merged:?}"
        );
        let limits = self
            .exec(
                &pod,
                &c,
                "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max",
            )
            .await?;
        ensure!(
            limits.split_whitespace().collect::<Vec<_>>()
                == [PIDS_LIMIT.to_string(), MEMORY_LIMIT.to_string()],
            "the guest's cgroup reads {limits:?} after the update"
        );

        rt.stop_pod(&pod).await.context("stop")?;
        rt.delete_pod(&pod).await.context("delete")?;
        remove_volume(&vol)
    }

    /// Runs `sh -c script` in container `c`; its stdout, failing on a non-zero exit.
    async fn exec(&self, pod: &PodId, c: &ContainerId, script: &str) -> Result<String> {
        let process = self
            .t
            .rt
            .exec_process(pod, c, ProcessConfig::new(["/bin/sh", "-c", script]))
            .await
            .context("exec")?;
        let out = tokio::time::timeout(Duration::from_secs(60), process.output())
            .await
            .context("the exec did not finish within 60 s")??;
        ensure!(
            out.exit_code == 0,
            "`{script}` exited {}: {}",
            out.exit_code,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The runtime root (for messages).
    pub fn root(&self) -> PathBuf {
        self.t.root().to_owned()
    }
}

/// Removes a volume's host directory once nothing is mounted on it (a
/// mount left there is a leak, and removing through it would be wrong).
fn remove_volume(vol: &Path) -> Result<()> {
    let mounts = vc_host::runtime::share::mounts_under(vol);
    ensure!(mounts.is_empty(), "mounts left on the volume: {mounts:?}");
    std::fs::remove_dir_all(vol).with_context(|| format!("cannot remove {}", vol.display()))
}
