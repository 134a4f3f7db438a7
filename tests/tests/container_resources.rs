//! Live resource changes on real pod VMs: a memory limit lowered under a
//! running process OOM-kills it and the OOM event arrives; a pids limit raised
//! while a process is refused forks lets it fork; stats and the list of the
//! container's processes follow what the container does; the container sees its new limits in its own
//! `/sys/fs/cgroup`; and the same through `virtc container update|stats` and
//! `virtc pod events`.

mod support;

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use support::{poll_until, ChildGuard};
use tokio::io::AsyncReadExt as _;
use vc_host::agent::collect_output;
use vc_host::config::{ResourcesConfig, VolumeConfig};
use vc_host::id::{ContainerId, PodId};
use vc_host::runtime::{PodEvent, ProcessConfig};
use vc_host::state::State;
use vc_proto::{ContainerStats, ProcessRef, StreamKind};

/// Generous bound for anything in a TCG guest; it only catches hangs.
const HANG: Duration = Duration::from_secs(120);

fn main_process(id: &ContainerId) -> ProcessRef {
    ProcessRef {
        container_id: id.to_string(),
        exec_id: None,
    }
}

/// Polls the container's stats until `done` holds, and returns them.
async fn stats_until(
    t: &TestRuntime,
    pod: &PodId,
    id: &ContainerId,
    what: &str,
    done: impl Fn(&ContainerStats) -> bool,
) -> Result<ContainerStats> {
    poll_until(&format!("stats showing {what}"), HANG, || async {
        let stats = t.rt.container_stats(pod, id).await?;
        Ok(if done(&stats) { Ok(stats) } else { Err(stats) })
    })
    .await
}

async fn bounded<T>(what: &str, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(HANG, f)
        .await
        .with_context(|| format!("{what} hung"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_lowered_live_oom_kills_and_reports_the_event() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("oomlive").id;
    t.rt.run_pod(t.pod("oomlive")).await?;
    let mut events = t.rt.pod_events(&pod).await?;

    // 48 MiB held in a shell variable, with no limit: it survives.
    let hog = t.container(
        "hog",
        &[
            "/bin/sh",
            "-c",
            // `sleep` is not last: the shell must not exec it and drop `x`.
            "x=$(head -c 50331648 /dev/zero | tr '\\0' a); echo holding; sleep 600; echo ${#x}",
        ],
    );
    let id = hog.id.clone();
    t.rt.create_container(&pod, hog).await?;
    let main_pid = t.rt.start_container(&pod, &id).await?.pid;
    let agent = t.rt.pod_agent(&pod).await?;
    let mut stdout = agent.attach(&main_process(&id), StreamKind::Stdout).await?;
    let mut line = [0u8; 8];
    bounded("waiting for the allocation", async {
        Ok(stdout.read_exact(&mut line).await?)
    })
    .await?;
    assert_eq!(&line, b"holding\n");
    // The container's processes: the shell and the `sleep` it started, which
    // only the container's cgroup knows of.
    let pids = poll_until("the shell's child", HANG, || async {
        let pids = t.rt.container_pids(&pod, &id).await?;
        Ok(if pids.len() >= 2 { Ok(pids) } else { Err(pids) })
    })
    .await?;
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "ascending: {pids:?}");
    assert!(
        main_pid.is_some_and(|p| pids.contains(&p)),
        "{main_pid:?} {pids:?}"
    );
    let before = stats_until(&t, &pod, &id, "48 MiB in use", |s| {
        s.memory_usage_bytes > 40 << 20
    })
    .await?;
    assert_eq!(before.memory_limit_bytes, None, "no limit yet: {before:?}");
    assert!(before.pids >= 1, "{before:?}");

    // Lower the limit under what the process holds: the kernel OOM-kills it.
    let now =
        t.rt.update_container(
            &pod,
            &id,
            &ResourcesConfig {
                memory_limit_bytes: Some(16 << 20),
                ..ResourcesConfig::default()
            },
        )
        .await?;
    assert_eq!(now.memory_limit_bytes, Some(16 << 20));

    // The OOM event arrives (exits of the main process may come first).
    let oom = bounded("waiting for the OOM event", async {
        loop {
            match events.next().await? {
                Some(PodEvent::Oom { container }) => return Ok(container),
                None => bail!("the events ended without an OOM"),
                other => eprintln!("event before the OOM: {other:?}"),
            }
        }
    })
    .await?;
    assert_eq!(oom, id);

    let mut rest = Vec::new();
    bounded("reading to end-of-stream", async {
        Ok(stdout.read_to_end(&mut rest).await?)
    })
    .await?;
    assert!(rest.is_empty(), "{rest:?}");
    let code = bounded("waiting for the exit", async {
        Ok(agent.wait(&main_process(&id)).await?)
    })
    .await?;
    assert_eq!(code, 137, "SIGKILLed by the OOM killer");
    let status = t.rt.container_status(&pod, &id).await?;
    assert_eq!(status.state, State::Stopped);
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(
        status.config.resources.memory_limit_bytes,
        Some(16 << 20),
        "the record keeps the updated limit"
    );

    // A stopped container cannot be updated, and the refusal changes nothing.
    let err =
        t.rt.update_container(
            &pod,
            &id,
            &ResourcesConfig {
                pids_limit: Some(10),
                ..ResourcesConfig::default()
            },
        )
        .await
        .expect_err("updating a stopped container");
    assert!(err.to_string().contains("has stopped"), "{err}");

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_limit_raised_live_and_the_same_through_virtc() -> Result<()> {
    let t = TestRuntime::new()?;
    let virtc = Virtc::new(t.root(), &t.image.dir)?;
    let pod = t.pod("pidslive").id;
    t.rt.run_pod(t.pod("pidslive")).await?;

    // Two processes allowed: the shell spins on a refused fork until the limit
    // is raised, then forks, reports how often it was refused, and exits. On
    // the first refusal it marks a volume (a redirection of a builtin: no
    // fork), and the update waits for that mark: CPU time alone does not prove
    // a refusal, since under TCG starting the shells can take that long.
    let scratch = tempfile::tempdir()?;
    let mark_dir = scratch.path().join("mark");
    std::fs::create_dir(&mark_dir)?;
    let mut spinner = t.container(
        "spinner",
        &[
            "/bin/sh",
            "-c",
            // The inner shell is the second process; its subshell is refused
            // (which ends that shell) until the limit is raised.
            "n=0; until sh -c '( : ); exit 0' 2>/dev/null; do n=$((n+1)); \
             case $n in 1) : > /mark/refused;; esac; done; echo refused $n times",
        ],
    );
    spinner.volumes.push(VolumeConfig {
        host_path: mark_dir.clone(),
        container_path: "/mark".to_owned(),
        readonly: false,
    });
    spinner.resources.pids_limit = Some(2);
    let id = spinner.id.clone();
    t.rt.create_container(&pod, spinner).await?;
    t.rt.start_container(&pod, &id).await?;
    let mark = mark_dir.join("refused");
    poll_until("the spinner's mark of a refused fork", HANG, || async {
        Ok(if mark.exists() { Ok(()) } else { Err(()) })
    })
    .await?;
    // Spinning shows as CPU time: stats move while the container works.
    let spun = stats_until(&t, &pod, &id, "CPU time spent spinning", |s| {
        s.cpu_usage_us > 300_000
    })
    .await?;
    assert_eq!(spun.pids_limit, Some(2), "{spun:?}");
    assert!((1..=2).contains(&spun.pids), "{spun:?}");
    let later = t.rt.container_stats(&pod, &id).await?;
    assert!(later.cpu_usage_us > spun.cpu_usage_us, "{spun:?} {later:?}");

    // The pod's events, watched by another process until the pod stops.
    let events_out = scratch.path().join("events.jsonl");
    let events_err = scratch.path().join("events.err");
    let mut watcher = ChildGuard::spawn(
        "virtc pod events",
        Command::new(&virtc.exe)
            .arg("--root")
            .arg(&virtc.root)
            .arg("--image-dir")
            .arg(&virtc.image_dir)
            .args(["--json", "pod", "events", "pidslive"])
            .stdout(std::fs::File::create(&events_out)?)
            .stderr(std::fs::File::create(&events_err)?),
    )?;

    // Raised through virtc, from another process.
    let updated = virtc
        .ok([
            "--json",
            "container",
            "update",
            "pidslive",
            "spinner",
            "--pids-limit",
            "8",
        ])?
        .json()?;
    assert_eq!(updated["pids_limit"], 8, "{updated}");
    let agent = t.rt.pod_agent(&pod).await?;
    let out = bounded("collecting the output", async {
        Ok(collect_output(&agent, &main_process(&id)).await?)
    })
    .await?;
    assert_eq!(out.exit_code, 0, "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let refused: u64 = text
        .trim()
        .strip_prefix("refused ")
        .and_then(|s| s.strip_suffix(" times"))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected output {text:?}"))?;
    assert!(
        refused > 0,
        "the fork was refused before the update: {text:?}"
    );

    // Stats through virtc: a container of a running pod (a second one, alive).
    let idle = t.container("idle", &["/bin/sleep", "600"]);
    t.rt.create_container(&pod, idle).await?;
    t.rt.start_container(&pod, &"idle".parse()?).await?;
    let stats = virtc
        .ok(["--json", "container", "stats", "pidslive", "idle"])?
        .json()?;
    assert_eq!(stats["pids"], 1, "{stats}");
    assert!(stats["memory_usage_bytes"].as_u64() > Some(0), "{stats}");
    let bad = virtc.run([
        "container",
        "update",
        "pidslive",
        "idle",
        "--cpu-weight",
        "0",
    ])?;
    assert_ne!(bad.code, Some(0), "{bad}");
    assert!(bad.stderr.contains("cpu_weight"), "{bad}");
    let none = virtc.run(["container", "update", "pidslive", "idle"])?;
    assert!(none.stderr.contains("nothing to update"), "{none}");

    // The container sees its own cgroup, with the new limits, at /sys/fs/cgroup.
    virtc.ok([
        "container",
        "update",
        "pidslive",
        "idle",
        "--memory-limit",
        "64M",
        "--cpu-quota-us",
        "50000",
        "--cpu-weight",
        "50",
    ])?;
    let inside = bounded("reading the cgroup files inside", async {
        Ok(t.rt
            .exec_process(
                &pod,
                &"idle".parse()?,
                ProcessConfig::new([
                    "cat",
                    "/sys/fs/cgroup/memory.max",
                    "/sys/fs/cgroup/cpu.max",
                    "/sys/fs/cgroup/cpu.weight",
                ]),
            )
            .await?
            .output()
            .await?)
    })
    .await?;
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout),
        "67108864\n50000 100000\n50\n",
        "{inside:?}"
    );

    t.rt.stop_pod(&pod).await?;
    // The watcher ends by itself once the pod stopped, having seen the exit.
    let start = Instant::now();
    let status = loop {
        if let Some(status) = watcher.try_wait()? {
            break status;
        }
        if start.elapsed() > HANG {
            bail!("virtc pod events did not end after the pod stopped");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&events_out)?;
    assert!(
        status.success(),
        "virtc pod events: {status:?}\n{stdout}\n{}",
        std::fs::read_to_string(&events_err)?
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("events are not JSON lines: {stdout}"))?;
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "exited" && e["container"] == "spinner" && e["code"] == 0),
        "the spinner's exit is among the events: {stdout}"
    );

    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty());
    Ok(())
}
