//! Concurrency on one pod (issue 13, item 7): 8 workers, each a loop of
//! `virtc` processes (each in its own process group, killed by a guard if
//! the test ends first), issue mixed verbs on one running pod for 30 s:
//! exec, pod and container status, update, stats, container create and
//! delete, pod pause and resume. Every verb must succeed or fail with an
//! error that names a state conflict (the error's text is classified; a
//! parse error of a record, a panic, an I/O error or a verb that does not
//! end fails the test, printed). Meanwhile a reader parses the pod's records
//! straight from the state directory, over and over: none may be torn.
//! Afterwards every record parses, the pod answers an exec, and after stop
//! and delete nothing is left.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use support::leaks::{assert_no_leak, on_disk};
use support::pod::TestRuntime;
use support::records::check_records;
use support::virtc::{Ran, Virtc};

/// How long the workers run.
const RUN_FOR: Duration = Duration::from_secs(30);

/// How many workers (virtc processes at once).
const WORKERS: usize = 8;

/// A verb that has not ended after this long hangs: the test fails.
const VERB_TIMEOUT: Duration = Duration::from_secs(90);

/// The pod.
const POD: &str = "cc";

/// Ids of the containers workers create and delete: shared between
/// workers, so creates and deletes collide.
const SHARED_IDS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verb {
    Exec,
    PodStatus,
    ContainerStatus,
    Update,
    Stats,
    Create,
    Delete,
    Pause,
    Resume,
}

/// Each worker walks this list from its own offset: execs most often,
/// each pause followed by a resume from the same worker.
const SCHEDULE: [Verb; 12] = [
    Verb::Exec,
    Verb::PodStatus,
    Verb::Create,
    Verb::Update,
    Verb::Exec,
    Verb::Stats,
    Verb::ContainerStatus,
    Verb::Delete,
    Verb::Pause,
    Verb::Resume,
    Verb::Exec,
    Verb::Stats,
];

/// The state conflicts a verb may fail with, as the error names them.
fn conflict(error: &str) -> Option<&'static str> {
    // The runtime's own messages (RuntimeError::ContainerExists,
    // ContainerNotFound), not an agent's refusal that merely says so.
    if error.starts_with("container ") && error.contains(" already exists in pod ") {
        Some("already exists")
    } else if error.starts_with("container ") && error.contains(" does not exist in pod ") {
        Some("does not exist")
    } else if error.contains("needs it running") {
        // RuntimeError::PodNotRunning, ProcessError::ContainerNotRunning.
        Some("not running (paused)")
    } else if error.contains("has stopped;") {
        Some("container stopped")
    } else if error.starts_with("cannot ")
        && error.contains(" that is ")
        && error.contains("; it must be ")
    {
        // state::TransitionError: pause of a paused pod, resume of a running one.
        Some("wrong state for the transition")
    } else {
        None
    }
}

/// The error line virtc printed (`virtc: error: ...`), if any.
fn error_line(ran: &Ran) -> Option<&str> {
    ran.stderr
        .lines()
        .find_map(|l| l.strip_prefix("virtc: error: "))
}

/// What one verb did.
#[derive(Debug)]
enum Outcome {
    Ok,
    Conflict(&'static str),
    /// Anything else: the test fails and prints it.
    Bad(String),
}

fn args(verb: Verb, worker: usize, n: usize, rootfs: &str) -> Vec<String> {
    let shared = format!("x{}", worker % SHARED_IDS);
    let list: Vec<String> = match verb {
        Verb::Exec => vec![
            "container".into(),
            "exec".into(),
            POD.into(),
            "main".into(),
            "--".into(),
            "/bin/echo".into(),
            format!("w{worker}.{n}"),
        ],
        Verb::PodStatus => vec!["pod".into(), "status".into(), POD.into(), "--json".into()],
        Verb::ContainerStatus => vec![
            "container".into(),
            "status".into(),
            POD.into(),
            "main".into(),
            "--json".into(),
        ],
        Verb::Update => vec![
            "container".into(),
            "update".into(),
            POD.into(),
            "main".into(),
            "--pids-limit".into(),
            (200 + n).to_string(),
        ],
        Verb::Stats => vec![
            "container".into(),
            "stats".into(),
            POD.into(),
            "main".into(),
        ],
        Verb::Create => vec![
            "container".into(),
            "create".into(),
            POD.into(),
            shared,
            "--rootfs".into(),
            rootfs.into(),
            "--".into(),
            "/bin/sleep".into(),
            "600".into(),
        ],
        Verb::Delete => vec!["container".into(), "delete".into(), POD.into(), shared],
        Verb::Pause => vec!["pod".into(), "pause".into(), POD.into()],
        Verb::Resume => vec!["pod".into(), "resume".into(), POD.into()],
    };
    list
}

/// Judges one verb's result.
fn judge(verb: Verb, worker: usize, n: usize, ran: &Ran) -> Outcome {
    if ran.code == Some(0) {
        let good = match verb {
            Verb::Exec => ran.stdout == format!("w{worker}.{n}\n"),
            Verb::PodStatus => ran
                .json()
                .is_ok_and(|s| s["state"] == "running" || s["state"] == "paused"),
            Verb::ContainerStatus => ran.json().is_ok_and(|s| s["state"] == "running"),
            _ => true,
        };
        return if good {
            Outcome::Ok
        } else {
            Outcome::Bad(format!("succeeded with unexpected output: {ran}"))
        };
    }
    match error_line(ran).and_then(conflict) {
        Some(kind) if ran.code == Some(125) => Outcome::Conflict(kind),
        _ => Outcome::Bad(ran.to_string()),
    }
}

/// One worker: verbs from its offset of the schedule until the time is up,
/// and then the resume that its last pause is owed (the schedule puts each
/// worker's resume right after its pause): a worker that stopped between
/// them would leave the pod frozen under the others' execs, whose output
/// then waits for a resume that never comes.
fn worker(
    v: &Virtc,
    w: usize,
    rootfs: &str,
    scratch: &Path,
    until: Instant,
) -> Vec<(Verb, Outcome, Duration)> {
    let mut done = Vec::new();
    let mut n = 0;
    let mut owes_resume = false;
    while Instant::now() < until || owes_resume {
        let verb = SCHEDULE[(w + n) % SCHEDULE.len()];
        owes_resume = verb == Verb::Pause;
        let t0 = Instant::now();
        let outcome = match v.run_bounded(args(verb, w, n, rootfs), scratch, VERB_TIMEOUT) {
            Ok(ran) => judge(verb, w, n, &ran),
            Err(e) => Outcome::Bad(format!("{e:#}")),
        };
        done.push((verb, outcome, t0.elapsed()));
        n += 1;
    }
    done
}

#[derive(Debug, Default)]
struct Tally {
    runs: usize,
    ok: usize,
    conflicts: BTreeMap<&'static str, usize>,
    bad: Vec<String>,
    max: Duration,
    total: Duration,
}

#[test]
fn eight_processes_of_mixed_verbs_on_one_pod_for_30_s() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = Virtc::new(t.root(), &t.image.dir)?;
    let rootfs = t
        .rootfs
        .to_str()
        .context("rootfs path is UTF-8")?
        .to_owned();
    v.ok(["pod", "create", POD])?;
    v.ok([
        "container",
        "create",
        POD,
        "main",
        "--rootfs",
        &rootfs,
        "--",
        "/bin/sleep",
        "3600",
    ])?;
    v.ok(["pod", "start", POD])?;
    let running = on_disk(&t, POD);

    // The reader: every record parses, every time; it reads every 5 ms
    // until told to stop.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let reader = {
        let root = t.root().to_owned();
        std::thread::spawn(move || -> (usize, Vec<String>) {
            let mut reads = 0;
            let mut torn = Vec::new();
            while let Err(RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(5))
            {
                match check_records(&root) {
                    Ok(n) => reads += n,
                    Err(e) => torn.push(format!("{e:#}")),
                }
            }
            (reads, torn)
        })
    };

    let scratch = tempfile::tempdir()?;
    let started = Instant::now();
    let until = started + RUN_FOR;
    let results: Vec<Vec<(Verb, Outcome, Duration)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let dir = scratch.path().join(format!("w{w}"));
                let v = &v;
                let rootfs = rootfs.as_str();
                s.spawn(move || {
                    std::fs::create_dir_all(&dir)
                        .map(|()| worker(v, w, rootfs, &dir, until))
                        .unwrap_or_else(|e| {
                            vec![(
                                Verb::Exec,
                                Outcome::Bad(format!("scratch: {e}")),
                                Duration::ZERO,
                            )]
                        })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed();
    drop(stop);
    let (reads, torn) = reader.join().unwrap_or((0, vec!["reader panicked".into()]));

    let mut tally: BTreeMap<Verb, Tally> = BTreeMap::new();
    for (verb, outcome, took) in results.into_iter().flatten() {
        let e = tally.entry(verb).or_default();
        e.runs += 1;
        e.total += took;
        e.max = e.max.max(took);
        match outcome {
            Outcome::Ok => e.ok += 1,
            Outcome::Conflict(kind) => *e.conflicts.entry(kind).or_default() += 1,
            Outcome::Bad(what) => e.bad.push(what),
        }
    }
    eprintln!(
        "{WORKERS} workers for {:.1} s; records read {reads} times",
        elapsed.as_secs_f64()
    );
    eprintln!("| verb | runs | ok | conflicts | mean | max |");
    for (verb, e) in &tally {
        eprintln!(
            "| {verb:?} | {} | {} | {:?} | {:.2} s | {:.2} s |",
            e.runs,
            e.ok,
            e.conflicts,
            e.total.as_secs_f64() / e.runs.max(1) as f64,
            e.max.as_secs_f64()
        );
    }
    let bad: Vec<String> = tally
        .iter()
        .flat_map(|(verb, e)| e.bad.iter().map(move |b| format!("{verb:?}: {b}")))
        .collect();
    ensure!(
        bad.is_empty(),
        "{} verbs failed without naming a state conflict:\n{}",
        bad.len(),
        bad.join("\n\n")
    );
    ensure!(torn.is_empty(), "torn records: {torn:?}");
    ensure!(reads > 0, "the reader never read a record");
    for verb in SCHEDULE {
        let ok = tally.get(&verb).map_or(0, |e| e.ok);
        ensure!(ok > 0, "{verb:?} never succeeded: {tally:?}");
    }

    // Afterwards: the records parse, the pod runs (every pause was followed
    // by its worker's resume) and answers.
    ensure!(check_records(t.root())? == 1, "records");
    let s = v.ok(["pod", "status", POD, "--json"])?.json()?;
    ensure!(
        s["state"] == "running",
        "the pod is not running at the end: {s}"
    );
    let echoed = v.ok([
        "container",
        "exec",
        POD,
        "main",
        "--",
        "/bin/echo",
        "still here",
    ])?;
    ensure!(echoed.stdout == "still here\n", "{echoed}");
    for i in 0..SHARED_IDS {
        let ran = v.run(["container", "delete", POD, &format!("x{i}")])?;
        ensure!(
            ran.code == Some(0) || error_line(&ran).and_then(conflict) == Some("does not exist"),
            "{ran}"
        );
    }
    let mut all = running;
    let now = on_disk(&t, POD);
    all.pids.extend(now.pids);
    all.cgroups.extend(now.cgroups);
    v.ok(["pod", "stop", POD])?;
    v.ok(["pod", "delete", POD])?;
    assert_no_leak(&t, &all, "concurrency")
}
