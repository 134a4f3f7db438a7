//! containerd's own client, `ctr`, driving vc's shim (`io.containerd.vc.v2`) through a private
//! containerd 1.6: images imported from `cargo xtask oci-image`'s tarballs, containers run in
//! real VMs. Output and exit codes, the guest's kernel, a real terminal, exec with stdin, kill
//! (one process and all), pause and resume, metrics and ps, a rootfs directory, two containers
//! grouped into one VM by the CRI annotations, the VM killed under a task, and the shim killed.
//! Each test has its own daemon and ends by checking that nothing is left behind.

mod support;

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::containerd::{
    oci_images, Containerd, BOOT_TIMEOUT, BUSYBOX, CTR_TIMEOUT, NAMESPACE as NS, RUNTIME,
};
use support::io::{read_master_until, set_window};
use support::pod::{pid_gone, wait_pids_gone};
use support::virtc::Ran;

/// A daemon with the busybox image imported into the test namespace.
fn with_busybox() -> Result<Containerd> {
    let images = oci_images()?;
    let c = Containerd::start()?;
    c.import(NS, &images.busybox, BUSYBOX)?;
    Ok(c)
}

/// `ctr run --runtime io.containerd.vc.v2 [FLAGS] busybox ID COMMAND...`.
fn run_args<'a>(flags: &[&'a str], id: &'a str, command: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--runtime", RUNTIME];
    args.extend_from_slice(flags);
    args.push(BUSYBOX);
    args.push(id);
    args.extend_from_slice(command);
    args
}

/// Starts a detached container (`ctr run -d`).
fn run_detached(c: &Containerd, flags: &[&str], id: &str, command: &[&str]) -> Result<()> {
    let mut f = vec!["-d"];
    f.extend_from_slice(flags);
    c.ctr(NS, run_args(&f, id, command), BOOT_TIMEOUT)?
        .success()
        .map(drop)
}

/// `ctr task exec --exec-id EXEC ID COMMAND...`, run to its end.
fn exec(c: &Containerd, id: &str, exec_id: &str, command: &[&str]) -> Result<Ran> {
    let mut args = vec!["task", "exec", "--exec-id", exec_id, id];
    args.extend_from_slice(command);
    c.ctr(NS, args, BOOT_TIMEOUT)
}

/// Runs `command` in the task until it exits 0 (a condition inside the container), each try
/// with its own exec id.
fn wait_exec_ok(c: &Containerd, id: &str, command: &[&str], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for n in 0.. {
        let ran = exec(c, id, &format!("probe{n}"), command)?;
        if ran.code == Some(0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{command:?} in {id} did not succeed within {timeout:?}; last try:\n{ran}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unreachable!("the loop returns")
}

/// Kills a task with SIGKILL, waits for it to stop, and deletes it and its container; returns
/// the exit code `ctr task delete` reports (it exits with the task's code).
fn kill_and_delete(c: &Containerd, id: &str) -> Result<i32> {
    c.ctr_ok(NS, ["task", "kill", "-s", "SIGKILL", id], CTR_TIMEOUT)?;
    c.wait_task_status(NS, id, "STOPPED", BOOT_TIMEOUT)?;
    delete(c, id)
}

/// Deletes a stopped task and its container; returns the task's exit code, which `ctr task
/// delete` reports in a warning when it is not 0.
fn delete(c: &Containerd, id: &str) -> Result<i32> {
    let ran = c.ctr_ok(NS, ["task", "delete", id], CTR_TIMEOUT)?;
    c.ctr_ok(NS, ["container", "delete", id], CTR_TIMEOUT)?;
    match ran.stderr.split_once("exit with non-zero exit code ") {
        None => Ok(0),
        Some((_, rest)) => rest
            .split(|ch: char| !ch.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no exit code in\n{ran}")),
    }
}

/// The boot id of the VM a task runs in.
fn boot_id(c: &Containerd, id: &str) -> Result<String> {
    let ran = exec(c, id, "bootid", &["cat", "/proc/sys/kernel/random/boot_id"])?.success()?;
    let id = ran.stdout.trim().to_owned();
    ensure!(id.len() == 36, "not a boot id: {ran}");
    Ok(id)
}

#[test]
fn ctr_run_passes_output_and_exit_codes_from_the_guest_kernel() -> Result<()> {
    let c = with_busybox()?;
    let ran = c
        .ctr(
            NS,
            run_args(
                &["--rm"],
                "out",
                &["sh", "-c", "echo to-stdout; echo to-stderr >&2; uname -r"],
            ),
            BOOT_TIMEOUT,
        )?
        .success()?;
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"to-stdout"), "{ran}");
    assert!(ran.stderr.contains("to-stderr"), "{ran}");
    // The guest's kernel, the one of the image, not the host's.
    let guest = lines.get(1).context("no uname -r line")?.trim();
    let host = nix::sys::utsname::uname()?;
    assert_eq!(guest, c.image.manifest.kernel_version, "{ran}");
    assert_ne!(Some(guest), host.release().to_str(), "{ran}");

    let ran = c.ctr(
        NS,
        run_args(&["--rm"], "code", &["sh", "-c", "exit 7"]),
        BOOT_TIMEOUT,
    )?;
    assert_eq!(ran.code, Some(7), "{ran}");

    // --rm removed them all.
    let left = c.ctr_ok(NS, ["container", "ls", "-q"], CTR_TIMEOUT)?;
    assert_eq!(left.stdout.trim(), "", "{left}");
    c.finish()
}

#[test]
fn ctr_run_t_gives_the_container_a_real_terminal() -> Result<()> {
    let c = with_busybox()?;
    let pty = nix::pty::openpty(None, None)?;
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    set_window(&master, 37, 91)?;
    let mut cmd = c.ctr_command(
        NS,
        run_args(
            &["--rm", "-t"],
            "tty",
            &[
                "sh",
                "-c",
                "tty; stty size; test -t 1 && echo stdout-is-a-tty",
            ],
        ),
    );
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave.try_clone()?));
    let mut ctr = support::ChildGuard::spawn_with_stdin("ctr run -t", &mut cmd)?;
    drop(slave);
    let mut seen = Vec::new();
    let result = read_master_until(&master, &mut seen, 0, "stdout-is-a-tty", BOOT_TIMEOUT);
    let text = String::from_utf8_lossy(&seen).into_owned();
    result?;
    // The container's stdout is a pseudo-terminal of the guest, sized as ours.
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("37 91"), "{text:?}");
    let Some(status) = ctr.wait_timeout(BOOT_TIMEOUT)? else {
        anyhow::bail!("ctr run -t did not end: {text:?}");
    };
    assert_eq!(status.code(), Some(0), "{text:?}");
    c.finish()
}

#[test]
fn ctr_task_exec_feeds_stdin_and_passes_the_exit_code() -> Result<()> {
    let c = with_busybox()?;
    run_detached(&c, &[], "exec", &["sleep", "1000000"])?;

    let args = [
        "task",
        "exec",
        "--exec-id",
        "upper",
        "exec",
        "sh",
        "-c",
        "tr a-z A-Z; exit 3",
    ];
    let ran = c.ctr_stdin(NS, args, b"hello from the host\n", BOOT_TIMEOUT)?;
    assert_eq!(ran.code, Some(3), "{ran}");
    assert_eq!(ran.stdout, "HELLO FROM THE HOST\n", "{ran}");

    // A larger input arrives whole, end-of-file included.
    let input: Vec<u8> = (0..1u32 << 20).map(|i| b'a' + (i % 26) as u8).collect();
    let args = ["task", "exec", "--exec-id", "count", "exec", "wc", "-c"];
    let ran = c.ctr_stdin(NS, args, &input, BOOT_TIMEOUT)?.success()?;
    assert_eq!(ran.stdout.trim(), input.len().to_string(), "{ran}");

    assert_eq!(kill_and_delete(&c, "exec")?, 137);
    c.finish()
}

#[test]
fn ctr_task_kill_signals_the_task_and_all_its_processes() -> Result<()> {
    let c = with_busybox()?;
    // SIGTERM (the default) reaches the container's first process, which exits by its trap.
    run_detached(
        &c,
        &[],
        "term",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; touch /tmp/trapped; while :; do sleep 1; done",
        ],
    )?;
    wait_exec_ok(&c, "term", &["test", "-f", "/tmp/trapped"], BOOT_TIMEOUT)?;
    c.ctr_ok(NS, ["task", "kill", "term"], CTR_TIMEOUT)?;
    c.wait_task_status(NS, "term", "STOPPED", BOOT_TIMEOUT)?;
    assert_eq!(delete(&c, "term")?, 7);

    // --all reaches an exec'd process too.
    run_detached(&c, &[], "all", &["sleep", "1000000"])?;
    let mut execd = c.spawn_ctr(
        NS,
        [
            "task",
            "exec",
            "--exec-id",
            "second",
            "all",
            "sleep",
            "1000000",
        ],
    )?;
    let deadline = Instant::now() + BOOT_TIMEOUT;
    loop {
        let ps = c.ctr_ok(NS, ["task", "ps", "all"], CTR_TIMEOUT)?;
        if ps
            .stdout
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count()
            >= 2
        {
            break;
        }
        ensure!(
            execd.try_code()?.is_none(),
            "the exec ended early: {}",
            execd.stdout_so_far()
        );
        ensure!(
            Instant::now() < deadline,
            "the exec never showed in ps:\n{ps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.ctr_ok(
        NS,
        ["task", "kill", "--all", "-s", "SIGKILL", "all"],
        CTR_TIMEOUT,
    )?;
    let ran = execd.wait(BOOT_TIMEOUT)?;
    assert_eq!(ran.code, Some(137), "{ran}");
    c.wait_task_status(NS, "all", "STOPPED", BOOT_TIMEOUT)?;
    assert_eq!(delete(&c, "all")?, 137);
    c.finish()
}

/// The counter the pause test's container writes, read on the host through the task's rootfs.
fn counter(c: &Containerd, id: &str) -> Option<u64> {
    let file = c.bundle(NS, id).join("rootfs/tmp/n");
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[test]
fn ctr_task_pause_stops_the_task_and_resume_continues_it() -> Result<()> {
    let c = with_busybox()?;
    run_detached(
        &c,
        &[],
        "pause",
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done",
        ],
    )?;
    let wait_counter_above = |floor: u64| -> Result<u64> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Some(n) = counter(&c, "pause").filter(|n| *n > floor) {
                return Ok(n);
            }
            ensure!(
                Instant::now() < deadline,
                "the counter did not pass {floor} (now {:?})",
                counter(&c, "pause")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = wait_counter_above(0)?;
    wait_counter_above(first)?;

    c.ctr_ok(NS, ["task", "pause", "pause"], CTR_TIMEOUT)?;
    assert_eq!(c.task_status(NS, "pause")?, "PAUSED");
    // Frozen: the counter does not move while we watch it for three seconds.
    let frozen = counter(&c, "pause").context("no counter")?;
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            counter(&c, "pause"),
            Some(frozen),
            "the counter moved while paused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    c.ctr_ok(NS, ["task", "resume", "pause"], CTR_TIMEOUT)?;
    assert_eq!(c.task_status(NS, "pause")?, "RUNNING");
    wait_counter_above(frozen)?;
    assert_eq!(kill_and_delete(&c, "pause")?, 137);
    c.finish()
}

#[test]
fn ctr_task_metrics_and_ps_show_the_task() -> Result<()> {
    let c = with_busybox()?;
    run_detached(
        &c,
        &[],
        "metrics",
        &["sh", "-c", "sleep 1000000 & exec sleep 1000001"],
    )?;
    // ps: the task's first process and its child, then an exec'd third.
    let wait_ps = |n: usize| -> Result<Vec<u32>> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let ps = c.ctr_ok(NS, ["task", "ps", "metrics"], CTR_TIMEOUT)?;
            let pids = ps
                .stdout
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().next())
                .map(|p| p.parse::<u32>().with_context(|| format!("not a pid: {ps}")))
                .collect::<Result<Vec<u32>>>()?;
            if pids.len() == n {
                return Ok(pids);
            }
            ensure!(
                Instant::now() < deadline,
                "ps never showed {n} processes:\n{ps}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let two = wait_ps(2)?;
    assert_ne!(two[0], two[1]);
    let execd = c.spawn_ctr(
        NS,
        [
            "task",
            "exec",
            "--exec-id",
            "third",
            "metrics",
            "sleep",
            "1000002",
        ],
    )?;
    let three = wait_ps(3)?;
    assert!(two.iter().all(|p| three.contains(p)), "{two:?} {three:?}");
    // The exec's line carries its exec id (runc's ProcessDetails); the
    // others carry none.
    let ps = c.ctr_ok(NS, ["task", "ps", "metrics"], CTR_TIMEOUT)?;
    let third = three.iter().find(|p| !two.contains(p)).expect("a new pid");
    let marked: Vec<&str> = ps.stdout.lines().filter(|l| l.contains("third")).collect();
    assert_eq!(marked.len(), 1, "{ps}");
    assert!(marked[0].starts_with(&third.to_string()), "{ps}");
    c.ctr_ok(
        NS,
        [
            "task",
            "kill",
            "--exec-id",
            "third",
            "-s",
            "SIGKILL",
            "metrics",
        ],
        CTR_TIMEOUT,
    )?;
    assert_eq!(execd.wait(BOOT_TIMEOUT)?.code, Some(137));
    wait_ps(2)?;

    // metrics: containerd's cgroup v2 figures from the guest.
    let ran = c.ctr_ok(
        NS,
        ["task", "metrics", "--format", "json", "metrics"],
        CTR_TIMEOUT,
    )?;
    let json: serde_json::Value =
        serde_json::from_str(&ran.stdout).with_context(|| format!("not JSON:\n{ran}"))?;
    let usage = json.pointer("/memory/usage").and_then(|v| v.as_u64());
    assert!(usage.is_some_and(|u| u > 0), "no memory usage in {json:#}");
    let pids = json.pointer("/pids/current").and_then(|v| v.as_u64());
    assert!(pids.is_some_and(|p| p >= 2), "no pids count in {json:#}");
    let table = c.ctr_ok(NS, ["task", "metrics", "metrics"], CTR_TIMEOUT)?;
    assert!(table.stdout.contains("memory.usage"), "{table}");

    assert_eq!(kill_and_delete(&c, "metrics")?, 137);
    c.finish()
}

#[test]
fn ctr_run_rootfs_runs_a_directory() -> Result<()> {
    let c = Containerd::start()?;
    let dir = tempfile::tempdir_in("/tmp")?;
    let rootfs = support::rootfs_copy(&support::rootfs_dir()?, &dir.path().join("rootfs"))?;
    let marker = format!("marker-{}", std::process::id());
    std::fs::write(rootfs.join("marker"), &marker)?;
    let rootfs_arg = rootfs.to_str().context("a UTF-8 path")?;
    let ran = c
        .ctr(
            NS,
            [
                "run",
                "--rm",
                "--runtime",
                RUNTIME,
                "--rootfs",
                rootfs_arg,
                "dir",
                "sh",
                "-c",
                "cat /marker; echo from-the-guest > /written",
            ],
            BOOT_TIMEOUT,
        )?
        .success()?;
    assert_eq!(ran.stdout, marker, "{ran}");
    // The container wrote into the directory itself.
    assert_eq!(
        std::fs::read_to_string(rootfs.join("written"))?,
        "from-the-guest\n"
    );
    assert!(
        vc_host::runtime::share::mounts_under(dir.path()).is_empty(),
        "the rootfs is still mounted"
    );
    c.finish()
}

#[test]
fn cri_annotated_containers_share_one_vm() -> Result<()> {
    let c = with_busybox()?;
    let sandbox = [
        "--annotation",
        "io.kubernetes.cri.container-type=sandbox",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sb",
    ];
    let member = [
        "--annotation",
        "io.kubernetes.cri.container-type=container",
        "--annotation",
        "io.kubernetes.cri.sandbox-id=sb",
        "--annotation",
        "io.kubernetes.cri.sandbox-name=sb",
    ];
    run_detached(&c, &sandbox, "sb", &["sleep", "1000000"])?;
    run_detached(&c, &member, "member", &["sleep", "1000000"])?;
    let (a, b) = (boot_id(&c, "sb")?, boot_id(&c, "member")?);
    assert_eq!(a, b, "the two containers run in different VMs");
    // One VM, one shim.
    assert_eq!(c.vc_pods().len(), 1, "{:?}", c.vc_pods());
    assert_eq!(c.qemu_pids().len(), 1);
    assert_eq!(c.shim_pids().len(), 1, "{:?}", c.processes());

    // A plain container is a pod of its own, in another VM.
    let ran = c
        .ctr(
            NS,
            run_args(
                &["--rm"],
                "alone",
                &["cat", "/proc/sys/kernel/random/boot_id"],
            ),
            BOOT_TIMEOUT,
        )?
        .success()?;
    assert_ne!(
        ran.stdout.trim(),
        a,
        "a standalone container joined the sandbox's VM"
    );

    assert_eq!(kill_and_delete(&c, "member")?, 137);
    // The sandbox's VM still serves its first container.
    assert_eq!(boot_id(&c, "sb")?, a);
    assert_eq!(kill_and_delete(&c, "sb")?, 137);
    c.finish()
}

#[test]
fn ctr_sees_exit_255_when_the_vm_is_killed() -> Result<()> {
    let c = with_busybox()?;
    let run = c.spawn_ctr(NS, run_args(&["--rm"], "doomed", &["sleep", "1000000"]))?;
    c.wait_task_status(NS, "doomed", "RUNNING", BOOT_TIMEOUT)?;
    let qemu = c.qemu_pids();
    assert_eq!(qemu.len(), 1, "one QEMU expected, found {qemu:?}");
    kill(Pid::from_raw(qemu[0]), Signal::SIGKILL)?;
    let ran = run.wait(BOOT_TIMEOUT)?;
    assert_eq!(ran.code, Some(255), "{ran}");
    c.finish()
}

#[test]
fn killing_the_shim_leaves_nothing_after_delete() -> Result<()> {
    let c = with_busybox()?;
    run_detached(&c, &[], "orphan", &["sleep", "1000000"])?;
    let shims = c.shim_pids();
    assert_eq!(shims.len(), 1, "one shim expected: {:?}", c.processes());
    let shim = shims[0];
    let qemu = c.qemu_pids();
    assert_eq!(qemu.len(), 1, "one QEMU expected, found {qemu:?}");
    ensure!(!pid_gone(shim), "the shim {shim} is not running");
    kill(Pid::from_raw(shim), Signal::SIGKILL)?;
    ensure!(
        wait_pids_gone(&[shim], CTR_TIMEOUT),
        "the shim survived SIGKILL"
    );
    // containerd notices and runs the shim's cleanup; the task may be gone already, so only
    // the container's deletion must succeed.
    let _ = c.ctr(NS, ["task", "delete", "orphan"], CTR_TIMEOUT)?;
    c.ctr_ok(NS, ["container", "delete", "orphan"], CTR_TIMEOUT)?;
    ensure!(
        wait_pids_gone(&qemu, BOOT_TIMEOUT),
        "the pod's QEMU outlived its shim's cleanup"
    );
    c.finish()
}
