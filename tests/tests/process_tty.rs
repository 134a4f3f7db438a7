//! `virtc container exec` as its own process: stdin piped with `-i`, the exit
//! code passed through, and `-i -t` on a real pseudo-terminal (raw mode while
//! it runs and restored after, the window size and its changes forwarded,
//! typing reaching a shell, the pty named in the container's own `/dev/pts`); and a process whose VM dies while it is waited
//! for: the waiter gets the VM-gone error and code 255.

mod support;

use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::termios::{tcgetattr, LocalFlags};
use nix::unistd::Pid;
use support::io::{data, read_master_until, set_window, sha256_hex};
use support::pod::TestRuntime;
use support::virtc::Virtc;
use vc_host::runtime::ProcessConfig;

const SHORT: Duration = Duration::from_secs(60);
/// Generous bound for 4 MiB through `virtc container exec -i` under TCG.
const LONG: Duration = Duration::from_secs(300);

/// A child killed (by its pid) if the test ends before it exits.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits up to `timeout` for the child's exit code, on its pidfd.
fn wait_code(child: &mut Reaped, timeout: Duration) -> Result<Option<i32>> {
    if let Some(status) = child.0.try_wait()? {
        return Ok(status.code());
    }
    ensure!(
        support::exits_within(child.0.id(), timeout)?,
        "virtc did not exit within {timeout:?}"
    );
    Ok(child.0.wait()?.code())
}

fn virtc_cmd(v: &Virtc, args: &[&str]) -> Command {
    let mut cmd = Command::new(&v.exe);
    cmd.arg("--root")
        .arg(&v.root)
        .arg("--image-dir")
        .arg(&v.image_dir)
        .args(args);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtc_exec_pipes_stdin_passes_codes_and_drives_a_terminal() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut config = t.pod("io-virtc");
    config
        .containers
        .push(t.container("c", &["sleep", "1000000"]));
    t.rt.run_pod(config).await?;
    let v = Virtc::new(t.root(), &t.image.dir)?;

    let v2 = v.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        // -i: stdin piped through, end-of-file included.
        let sent = data(7, 4 << 20);
        let mut child = Reaped(
            virtc_cmd(
                &v2,
                &[
                    "container",
                    "exec",
                    "-i",
                    "io-virtc",
                    "c",
                    "--",
                    "sha256sum",
                ],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
        );
        let mut stdin = child.0.stdin.take().context("stdin")?;
        let feeder = std::thread::spawn(move || stdin.write_all(&sent).map(|()| sent));
        let mut stdout = child.0.stdout.take().context("stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut out).map(|_| out)
        });
        // Bounded: once virtc has exited, both pipes are closed and the
        // threads end (on a timeout, dropping `child` kills it).
        let code = wait_code(&mut child, LONG)?;
        let out = reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))??;
        let sent = feeder
            .join()
            .map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        assert_eq!(code, Some(0));
        assert!(out.starts_with(&sha256_hex(&sent)), "{out}");

        // The exit code passes through.
        let ran = v2.run([
            "container",
            "exec",
            "io-virtc",
            "c",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])?;
        assert_eq!(ran.code, Some(3), "{ran:?}");
        let ran = v2.run(["container", "exec", "io-virtc", "c", "--", "/no/such/thing"])?;
        assert_ne!(ran.code, Some(0));
        assert!(ran.stderr.contains("/no/such/thing"), "{ran:?}");

        // -i -t on a real terminal.
        let pty = nix::pty::openpty(None, None)?;
        let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
        set_window(&master, 33, 77)?;
        let before = tcgetattr(slave.as_fd())?;
        ensure!(before
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO));
        let mut child = Reaped(
            virtc_cmd(
                &v2,
                &["container", "exec", "-i", "-t", "io-virtc", "c", "--", "sh"],
            )
            .stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave.try_clone()?))
            .spawn()?,
        );
        let mut seen = Vec::new();
        let write = |s: &[u8]| nix::unistd::write(&master, s).map(|_| ());
        // The pty is the container's own: its name exists in the container's
        // /dev/pts, so `tty` can name it.
        write(b"tty; stty size\r")?;
        let at = read_master_until(&master, &mut seen, 0, "/dev/pts/", SHORT)?;
        let at = read_master_until(&master, &mut seen, at, "33 77", SHORT)?;
        // Raw mode while it runs: the local terminal does not echo or edit.
        let during = tcgetattr(slave.as_fd())?;
        ensure!(
            !during.local_flags.contains(LocalFlags::ICANON),
            "not in raw mode"
        );
        set_window(&master, 20, 60)?;
        kill(Pid::from_raw(child.0.id() as i32), Signal::SIGWINCH)?;
        // virtc forwards the new size on the agent's control connection and
        // the typing on the terminal's own stream: nothing orders the two, so
        // ask until the shell sees the new size. Each answer ends with a
        // mark that the echo of the typed line cannot contain (the shell
        // computes it).
        let deadline = Instant::now() + SHORT;
        let mut at = at;
        for n in 1000u32.. {
            write(format!("stty size; echo mark$(({n}+1))\r").as_bytes())?;
            let end = read_master_until(&master, &mut seen, at, &format!("mark{}", n + 1), SHORT)?;
            let answer = String::from_utf8_lossy(&seen[at..end]).into_owned();
            at = end;
            if answer.contains("20 60") {
                break;
            }
            // Each question waits for its answer: that paces the loop.
            ensure!(
                Instant::now() < deadline,
                "the shell never saw the new window size: {answer:?}"
            );
        }
        write(b"echo sum=$((40+2))\r")?;
        read_master_until(&master, &mut seen, at, "sum=42", SHORT)?;
        write(b"exit 4\r")?;
        assert_eq!(wait_code(&mut child, SHORT)?, Some(4));
        // Restored on exit.
        let after = tcgetattr(slave.as_fd())?;
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
        Ok(())
    })
    .await??;
    t.rt.stop_pod(&"io-virtc".parse()?).await?;
    t.rt.delete_pod(&"io-virtc".parse()?).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_gets_code_255_when_the_vm_dies() -> Result<()> {
    let t = TestRuntime::new()?;
    let mut config = t.pod("io-death");
    config
        .containers
        .push(t.container("c", &["sleep", "1000000"]));
    t.rt.run_pod(config).await?;
    let (pod, c) = ("io-death".parse()?, "c".parse()?);
    let p =
        t.rt.exec_process(&pod, &c, ProcessConfig::new(["sleep", "1000"]))
            .await?;
    let status = t.rt.pod_status(&pod).await?;
    let qemu = status
        .processes
        .iter()
        .find(|p| p.name == "qemu")
        .context("a qemu process")?
        .pid;
    let waiter = async {
        let started = Instant::now();
        let result = p.wait().await;
        (result, started.elapsed())
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill(Pid::from_raw(qemu), Signal::SIGKILL)
    };
    let ((result, took), killed) =
        tokio::time::timeout(SHORT, async { tokio::join!(waiter, killer) })
            .await
            .context("the wait did not end after the VM died")?;
    killed?;
    let err = match result {
        Ok(code) => anyhow::bail!("wait returned {code} after the VM died"),
        Err(e) => e,
    };
    assert!(err.vm_gone(), "{err:?}");
    assert_eq!(err.exit_code(), Some(vc_proto::EXIT_CODE_VM_GONE));
    assert!(took < Duration::from_secs(10), "noticed after {took:?}");
    // The pod's other waiters (the main process, through the store) agree.
    let code = tokio::time::timeout(SHORT, t.rt.wait_container(&pod, &c))
        .await
        .context("waiting for the main process of a dead VM did not end")??;
    assert_eq!(code, vc_proto::EXIT_CODE_VM_GONE);
    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    Ok(())
}
