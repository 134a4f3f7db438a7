//! What a benchmark measured, as data ([`Outcome`]), and the report that `cargo xtask bench
//! <which> --report DIR` writes from the outcomes of a run: `report.md` (the host, then one
//! table per bench: each figure against its floor or goal, with the ratio), `results.json` (the
//! same, every sample included) and SVG plots drawn by [`super::plot`].
//!
//! A figure's ratio is always `value / floor`; its goal says which side of a bound that ratio
//! (or, for an absolute goal, the value itself) must stay on. Nothing here judges timings:
//! the benches measure, this module only writes down.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::plot;

/// The unit of a figure or of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    /// Milliseconds.
    Ms,
    /// Microseconds.
    Us,
    /// Mebibytes per second.
    MibPerS,
    /// Megabytes (10^6) per second.
    MbPerS,
    /// Mebibytes.
    Mib,
    /// Percent of one host CPU.
    CpuPercent,
}

impl Unit {
    /// The unit as written after a number.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Self::Ms => "ms",
            Self::Us => "us",
            Self::MibPerS => "MiB/s",
            Self::MbPerS => "MB/s",
            Self::Mib => "MiB",
            Self::CpuPercent => "% CPU",
        }
    }

    /// Whether this is a throughput (plotted as bars, in MiB/s).
    pub(crate) fn is_throughput(self) -> bool {
        matches!(self, Self::MibPerS | Self::MbPerS)
    }

    /// `value` of this throughput unit in MiB/s; other units pass through unchanged.
    pub(crate) fn to_mib_per_s(self, value: f64) -> f64 {
        match self {
            Self::MbPerS => value * 1e6 / f64::from(1u32 << 20),
            _ => value,
        }
    }
}

/// The bound a figure is held to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Goal {
    /// `value / floor` at most this.
    RatioAtMost(f64),
    /// `value / floor` at least this.
    RatioAtLeast(f64),
    /// The value itself at most this (in the figure's unit).
    AtMost(f64),
}

impl Goal {
    fn describe(self, unit: Unit) -> String {
        match self {
            Self::RatioAtMost(r) => format!("ratio <= {r}"),
            Self::RatioAtLeast(r) => format!("ratio >= {r}"),
            Self::AtMost(v) => format!("<= {v} {}", unit.symbol()),
        }
    }
}

/// What a figure is compared against, measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Floor {
    /// What the floor is (it says what runs there, e.g. "VM with a plain tap").
    pub name: String,
    /// Its value, in the figure's unit.
    pub value: f64,
}

/// One reported number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Figure {
    /// What was measured ("boot, median").
    pub name: String,
    /// The unit of `value` (and of the floor's value).
    pub unit: Unit,
    /// The measured value.
    pub value: f64,
    /// The floor, when there is one.
    pub floor: Option<Floor>,
    /// The goal, when there is one.
    pub goal: Option<Goal>,
}

impl Figure {
    /// A figure with neither floor nor goal.
    pub(crate) fn new(name: impl Into<String>, unit: Unit, value: f64) -> Self {
        Self {
            name: name.into(),
            unit,
            value,
            floor: None,
            goal: None,
        }
    }

    /// A duration, in milliseconds.
    pub(crate) fn ms(name: impl Into<String>, d: std::time::Duration) -> Self {
        Self::new(name, Unit::Ms, d.as_secs_f64() * 1e3)
    }

    /// Adds the floor `name` that took `d` (for a figure in milliseconds).
    pub(crate) fn floor_ms(self, name: impl Into<String>, d: std::time::Duration) -> Self {
        self.floor(name, d.as_secs_f64() * 1e3)
    }

    /// Adds the floor `name` measured at `value`.
    pub(crate) fn floor(mut self, name: impl Into<String>, value: f64) -> Self {
        self.floor = Some(Floor {
            name: name.into(),
            value,
        });
        self
    }

    /// Adds a goal.
    pub(crate) fn goal(mut self, goal: Goal) -> Self {
        self.goal = Some(goal);
        self
    }

    /// `value / floor`, when there is a non-zero floor.
    pub(crate) fn ratio(&self) -> Option<f64> {
        let floor = self.floor.as_ref()?.value;
        (floor != 0.0).then(|| self.value / floor)
    }

    /// Whether the goal is met; `None` without a goal (or a ratio goal without a floor).
    pub(crate) fn met(&self) -> Option<bool> {
        match self.goal? {
            Goal::RatioAtMost(r) => self.ratio().map(|x| x <= r),
            Goal::RatioAtLeast(r) => self.ratio().map(|x| x >= r),
            Goal::AtMost(v) => Some(self.value <= v),
        }
    }
}

/// The samples behind a distribution, one series of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Samples {
    /// The chart the series belongs to (series with the same chart are drawn together, so
    /// they share a unit), also its file name stem.
    pub chart: String,
    /// The series' name in the legend ("vc", "floor").
    pub series: String,
    /// The unit of every value.
    pub unit: Unit,
    /// One value per run.
    pub values: Vec<f64>,
}

/// What one bench measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Outcome {
    /// The bench (`boot`, `pod`, ...).
    pub bench: &'static str,
    /// The pods it ran at once, for a bench run at several scales (`density`).
    pub pods: Option<u32>,
    /// One sentence: what was measured, and how.
    pub about: String,
    /// The reported numbers.
    pub figures: Vec<Figure>,
    /// The distributions drawn as plots.
    pub samples: Vec<Samples>,
}

impl Outcome {
    /// An outcome with nothing measured yet.
    pub(crate) fn new(bench: &'static str, about: impl Into<String>) -> Self {
        Self {
            bench,
            pods: None,
            about: about.into(),
            figures: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// The figure named `name`, if reported.
    pub(crate) fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// Adds the series `series` of `chart`, in milliseconds.
    pub(crate) fn durations_ms(
        &mut self,
        chart: &str,
        series: &str,
        samples: &[std::time::Duration],
    ) {
        self.samples.push(Samples {
            chart: chart.to_owned(),
            series: series.to_owned(),
            unit: Unit::Ms,
            values: samples.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        });
    }
}

/// The machine and tree a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Host {
    /// UTC time the run started (RFC 3339).
    pub started: String,
    /// `git describe --always --dirty` of the tree.
    pub commit: String,
    /// Online CPUs.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// The host kernel (`uname -r`).
    pub kernel: String,
    /// The first line of `qemu-system-x86_64 --version`.
    pub qemu: String,
    /// `/proc/loadavg` when the run started and when it ended.
    pub load_before: String,
    /// See `load_before`.
    pub load_after: String,
    /// The `cargo xtask bench` arguments.
    pub command: String,
}

impl Host {
    /// What can be read now; `load_after` is filled by [`Host::finish`].
    pub(crate) fn probe(workspace: &Path, command: String) -> Self {
        let out = |cmd: &mut Command| {
            cmd.output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .unwrap_or_else(|| "unknown".to_owned())
        };
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        Self {
            started: out(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])),
            commit: out(Command::new("git")
                .arg("-C")
                .arg(workspace)
                .args(["describe", "--always", "--dirty"])),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib,
            kernel: out(Command::new("uname").arg("-r")),
            qemu: out(Command::new("qemu-system-x86_64").arg("--version")),
            load_before: loadavg(),
            load_after: String::new(),
            command,
        }
    }

    /// Records the load at the end of the run.
    pub(crate) fn finish(&mut self) {
        self.load_after = loadavg();
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// A bench of the run that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Failure {
    /// Which (`density (4 pods)`).
    pub bench: String,
    /// Its error chain.
    pub error: String,
}

/// `results.json`.
#[derive(Debug, Serialize)]
struct Results<'a> {
    host: &'a Host,
    outcomes: &'a [Outcome],
    failures: &'a [Failure],
}

/// Writes `report.md`, `results.json` and the plots into `dir` (created if missing).
pub(crate) fn write(
    dir: &Path,
    host: &Host,
    outcomes: &[Outcome],
    failures: &[Failure],
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let plots = plot::draw_all(dir, outcomes)?;
    let json = serde_json::to_string_pretty(&Results {
        host,
        outcomes,
        failures,
    })
    .context("cannot serialize the results")?;
    let md = markdown(host, outcomes, failures, &plots);
    for (name, text) in [("results.json", json), ("report.md", md)] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// A number with as many decimals as its size deserves.
pub(crate) fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The text of `report.md`. `plots` are the file names of the SVGs, by the bench they belong
/// to (`None`: a plot across benches).
fn markdown(
    host: &Host,
    outcomes: &[Outcome],
    failures: &[Failure],
    plots: &[plot::Drawn],
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# vc benchmark report\n");
    let _ = writeln!(
        md,
        "`cargo xtask bench {}` at {}, tree `{}`.\n",
        host.command, host.started, host.commit
    );
    let _ = writeln!(
        md,
        "Host: {} CPUs, {} MiB, Linux {}, {}; load average {} before and {} after. \
         Guests run under TCG (no KVM), so absolute times are slow: read the ratios, which \
         compare against a floor measured in the same run.\n",
        host.cpus, host.memory_mib, host.kernel, host.qemu, host.load_before, host.load_after
    );
    if !failures.is_empty() {
        let _ = writeln!(
            md,
            "## Failed\n\nThese benches failed in this run; their figures are missing.\n"
        );
        for f in failures {
            let _ = writeln!(md, "- **{}**: {}", f.bench, f.error.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    let goals: Vec<(&Outcome, &Figure)> = outcomes
        .iter()
        .flat_map(|o| o.figures.iter().map(move |f| (o, f)))
        .filter(|(_, f)| f.goal.is_some())
        .collect();
    if !goals.is_empty() {
        let _ = writeln!(md, "## Goals\n");
        let _ = writeln!(md, "| bench | figure | ratio or value | goal | met |");
        let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
        for (o, f) in goals {
            let shown = match (f.goal, f.ratio()) {
                (Some(Goal::AtMost(_)), _) | (_, None) => {
                    format!("{} {}", num(f.value), f.unit.symbol())
                }
                (_, Some(r)) => num(r),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {shown} | {} | {} |",
                title(o),
                f.name,
                f.goal.map_or(String::new(), |g| g.describe(f.unit)),
                match f.met() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
        let _ = writeln!(md);
    }
    for o in outcomes {
        let _ = writeln!(md, "## {}\n\n{}\n", title(o), o.about);
        let _ = writeln!(md, "| figure | value | floor | ratio |");
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for f in &o.figures {
            let floor = f.floor.as_ref().map_or(String::new(), |fl| {
                format!("{} {} ({})", num(fl.value), f.unit.symbol(), fl.name)
            });
            let _ = writeln!(
                md,
                "| {} | {} {} | {floor} | {} |",
                f.name,
                num(f.value),
                f.unit.symbol(),
                f.ratio().map_or(String::new(), num)
            );
        }
        let _ = writeln!(md);
        for p in plots
            .iter()
            .filter(|p| p.bench == Some(o.bench) && p.pods == o.pods)
        {
            let _ = writeln!(md, "![{}]({})\n", p.title, p.file);
        }
    }
    let across: Vec<&plot::Drawn> = plots.iter().filter(|p| p.bench.is_none()).collect();
    if !across.is_empty() {
        let _ = writeln!(md, "## Across benches\n");
        for p in across {
            let _ = writeln!(md, "![{}]({})\n", p.title, p.file);
        }
    }
    let _ = writeln!(
        md,
        "Every sample is in `results.json`. Each bench's own output, and the meaning of each \
         figure, are described in the docs (`docs/*.md`) of its subsystem."
    );
    md
}

/// A bench's section title.
fn title(o: &Outcome) -> String {
    scaled_name(o.bench, o.pods)
}

/// A bench's name, with the pods it ran when it runs at several scales.
pub(crate) fn scaled_name(bench: &str, pods: Option<u32>) -> String {
    match pods {
        Some(1) => format!("{bench} (1 pod)"),
        Some(n) => format!("{bench} ({n} pods)"),
        None => bench.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome() -> Outcome {
        let mut o = Outcome::new("boot", "QEMU spawn to handshake.");
        o.figures.push(
            Figure::new("boot, median", Unit::Ms, 1100.0)
                .floor("static init", 1000.0)
                .goal(Goal::RatioAtMost(1.1)),
        );
        o.figures
            .push(Figure::new("pss", Unit::Mib, 70.0).goal(Goal::AtMost(64.0)));
        o.figures.push(
            Figure::new("upload", Unit::MibPerS, 90.0)
                .floor("VM with a plain tap", 100.0)
                .goal(Goal::RatioAtLeast(0.8)),
        );
        o.durations_ms("boot", "vc", &[std::time::Duration::from_millis(1100)]);
        o
    }

    #[test]
    fn ratios_and_goals() {
        let o = outcome();
        let boot = o.figure("boot, median").expect("figure");
        assert!((boot.ratio().expect("ratio") - 1.1).abs() < 1e-9);
        assert_eq!(boot.met(), Some(true));
        assert_eq!(o.figure("pss").expect("figure").met(), Some(false));
        assert_eq!(o.figure("pss").expect("figure").ratio(), None);
        assert_eq!(o.figure("upload").expect("figure").met(), Some(true));
        let zero = Figure::new("x", Unit::Ms, 1.0)
            .floor("f", 0.0)
            .goal(Goal::RatioAtMost(1.0));
        assert_eq!((zero.ratio(), zero.met()), (None, None));
        assert!((Unit::MbPerS.to_mib_per_s(1_048_576.0) - 1e6).abs() < 1e-6);
    }

    #[test]
    fn markdown_lists_goals_and_tables() {
        let host = Host {
            started: "2026-12-02T08:00:00Z".to_owned(),
            commit: "abc".to_owned(),
            cpus: 2,
            memory_mib: 24000,
            kernel: "6.1".to_owned(),
            qemu: "QEMU 7.2".to_owned(),
            load_before: "1 1 1".to_owned(),
            load_after: "2 2 2".to_owned(),
            command: "all".to_owned(),
        };
        let plots = [plot::Drawn {
            bench: Some("boot"),
            pods: None,
            title: "boot".to_owned(),
            file: "boot.svg".to_owned(),
        }];
        let failed = [Failure {
            bench: "storm".to_owned(),
            error: "virtc pod start s3 failed".to_owned(),
        }];
        let md = markdown(&host, &[outcome()], &failed, &plots);
        assert!(
            md.contains("- **storm**: virtc pod start s3 failed"),
            "{md}"
        );
        assert!(
            md.contains("| boot | boot, median | 1.10 | ratio <= 1.1 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| boot | pss | 70.0 MiB | <= 64 MiB | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| upload | 90.0 MiB/s | 100 MiB/s (VM with a plain tap) | 0.90 |"),
            "{md}"
        );
        assert!(md.contains("![boot](boot.svg)"), "{md}");
        assert!(
            md.contains("load average 1 1 1 before and 2 2 2 after"),
            "{md}"
        );
    }

    #[test]
    fn results_serialize_with_every_sample() {
        let o = outcome();
        let json = serde_json::to_value(&o).expect("json");
        assert_eq!(json["figures"][0]["goal"]["ratio_at_most"], 1.1);
        assert_eq!(json["figures"][0]["floor"]["name"], "static init");
        assert_eq!(json["samples"][0]["values"][0], 1100.0);
        assert_eq!(json["samples"][0]["unit"], "ms");
    }
}
