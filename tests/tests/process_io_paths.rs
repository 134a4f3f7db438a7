//! The two paths of process output in real pod VMs. The direct path (the
//! default: the vsock connections themselves are the process's stdout and
//! stderr) and the pipes forced with `ProcessConfig::pipes` (the path of a
//! version-2 agent) give the same exact bytes, kept apart, ended at the
//! exit; the pipe path keeps the agent's memory flat under a slow reader; a
//! parked stream that no exec claims is closed by the agent, and an exec that
//! names it afterwards is refused.

mod support;

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use support::exec::{exec, finish, pod, put, run, sh, LONG, SHORT};
use support::io::{agent_rss_kib, data, hash_stream, sha256_hex};
use support::pod::TestRuntime;
use tokio::io::AsyncReadExt;
use vc_host::agent::AgentClientError;
use vc_proto::{ErrorCode, ProcessRef, ProcessSpec, StreamKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_give_exact_bytes_apart_and_ended_at_exit() -> Result<()> {
    let t = TestRuntime::new()?;
    let (pod, c) = pod(&t, "io-paths").await?;
    let a = data(5, 1 << 20);
    let b = data(6, 1 << 20);
    put(&t, &pod, &c, "/dev/shm/a", &a).await?;
    put(&t, &pod, &c, "/dev/shm/b", &b).await?;
    // 16 MiB of A on stdout and 16 MiB of B on stderr, interleaved by the
    // MiB, then three bytes and the exit at once.
    let script = "i=0; while [ $i -lt 16 ]; do cat /dev/shm/a; cat /dev/shm/b >&2; \
                  i=$((i+1)); done; printf end; exit 9";
    let mut expect_out = a.repeat(16);
    expect_out.extend_from_slice(b"end");
    let expect_err = b.repeat(16);
    for pipes in [false, true] {
        let p = exec(&t, &pod, &c, sh(script).pipes(pipes)).await?;
        let out = tokio::time::timeout(LONG, p.output()).await??;
        let path = if pipes { "pipes" } else { "direct" };
        ensure!(out.exit_code == 9, "{path}: exit code {}", out.exit_code);
        ensure!(
            out.stdout.len() == expect_out.len() && out.stdout == expect_out,
            "{path}: stdout differs ({} bytes)",
            out.stdout.len()
        );
        ensure!(
            out.stderr.len() == expect_err.len() && out.stderr == expect_err,
            "{path}: stderr differs ({} bytes)",
            out.stderr.len()
        );
    }
    finish(t, &pod).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipe_path_keeps_the_agent_flat_under_a_slow_reader() -> Result<()> {
    let t = TestRuntime::new()?;
    let (pod, c) = pod(&t, "io-pipes").await?;
    let a = data(7, 1 << 20);
    put(&t, &pod, &c, "/dev/shm/a", &a).await?;
    let rss_before = agent_rss_kib(&t.rt, &pod, &c).await?;
    // 64 MiB through the agent's pipe and copy; the reader pauses every
    // 16 MiB (the pipe fills, the writer blocks) and samples the agent.
    let mut p = exec(
        &t,
        &pod,
        &c,
        sh("i=0; while [ $i -lt 64 ]; do cat /dev/shm/a; i=$((i+1)); done").pipes(true),
    )
    .await?;
    let stdout = p.stdout.take().expect("stdout");
    let samples = std::sync::Mutex::new(Vec::new());
    let slow = hash_stream(stdout, 16 << 20, |_| {
        let (rt, pod, c, samples) = (&t.rt, &pod, &c, &samples);
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let kib = agent_rss_kib(rt, pod, c).await?;
            samples.lock().expect("samples lock").push(kib);
            Ok(())
        }
    });
    let (out, code) = tokio::time::timeout(LONG, async {
        tokio::try_join!(slow, async { Ok(p.wait().await?) })
    })
    .await??;
    let rss = samples.into_inner().expect("samples lock");
    eprintln!("pipe path: agent VmRSS {rss_before} KiB before, during {rss:?}");
    assert_eq!(code, 0);
    assert_eq!(out.len, 64 << 20);
    assert_eq!(out.sha256, sha256_hex(&a.repeat(64)), "stdout differs");
    let peak = rss.iter().copied().max().unwrap_or(rss_before);
    assert!(rss.len() >= 3, "too few samples: {rss:?}");
    assert!(
        peak < rss_before + 16 * 1024,
        "agent VmRSS grew from {rss_before} KiB to {peak} KiB"
    );
    finish(t, &pod).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_park_is_closed_and_its_exec_refused() -> Result<()> {
    let t = TestRuntime::new()?;
    let (pod, c) = pod(&t, "io-park").await?;
    let agent = t.rt.pod_agent(&pod).await?;
    ensure!(
        agent.direct_streams(),
        "the agent speaks protocol {}, not the direct streams' 3",
        agent.protocol_version()
    );
    let process = ProcessRef {
        container_id: "c".to_owned(),
        exec_id: Some("unclaimed".to_owned()),
    };
    // The agent's timer starts once it has sent its `Ok`, and `parked_at`
    // once that `Ok` has reached this process: a host stalled in between
    // shortens what is seen here. A few seconds leave room for a loaded
    // host while a park closed early (at once) still fails the bound below.
    let unclaimed = Duration::from_secs(4);
    let mut parked = agent
        .park_for(&process, StreamKind::Stdout, unclaimed)
        .await?;
    let parked_at = Instant::now();
    // The agent closes it: end of stream, no byte after the `Ok`.
    let mut got = Vec::new();
    tokio::time::timeout(SHORT, parked.read_to_end(&mut got)).await??;
    ensure!(got.is_empty(), "an unclaimed park carried {got:?}");
    ensure!(
        parked_at.elapsed() >= unclaimed / 2,
        "closed after {:?}, before its timeout",
        parked_at.elapsed()
    );
    let spec = ProcessSpec {
        args: vec!["echo".into(), "late".into()],
        env: vec![vc_host::config::DEFAULT_PATH.to_owned()],
        cwd: "/".into(),
        ..ProcessSpec::default()
    };
    match agent
        .exec_direct(&process, spec, vec![StreamKind::Stdout])
        .await
    {
        Err(AgentClientError::Agent { source, .. }) if source.code == ErrorCode::NotFound => {}
        other => bail!("an exec of an expired park gave {other:?}"),
    }
    // The pod goes on as before.
    let out = run(&t, &pod, &c, "echo fine").await?;
    ensure!(out.stdout == b"fine\n", "{out:?}");
    finish(t, &pod).await
}
