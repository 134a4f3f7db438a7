//! Running the real `virtc` binary as separate processes: built once per test
//! binary with the cargo that runs the tests, then invoked with a runtime root
//! and guest image directory of the test's choosing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

/// The command that builds virtc and the console logger, for messages. The
/// tests' virtc has the fault points (`VC_FAULT`, see `vc_host::fault`),
/// which a default build does not.
pub const BUILD_VIRTC: &str = "cargo build -p vc-host --bins --features fault-injection";

/// Builds vc-host's binaries (`virtc`, and `vc-console-log`, which every
/// pod runs and the library finds next to the test binary's profile
/// directory) once per test binary, and returns virtc's path.
pub fn virtc_path() -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| build_bins().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `target/<profile>` of this test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .with_context(|| format!("{} is not in target/<profile>/deps", exe.display()))
}

fn build_bins() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "-q",
            "-p",
            "vc-host",
            "--bins",
            "--features",
            "fault-injection",
        ])
        .current_dir(super::workspace_root())
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {cargo:?} to build vc-host's binaries"))?;
    if !status.success() {
        bail!("building vc-host's binaries failed ({status}); try `{BUILD_VIRTC}`");
    }
    let dir = profile_dir()?;
    for bin in ["virtc", "vc-console-log"] {
        if !dir.join(bin).is_file() {
            bail!("{bin} is not in {} after `{BUILD_VIRTC}`", dir.display());
        }
    }
    Ok(dir.join("virtc"))
}

/// Generous bound for one virtc process run to its end ([`Virtc::run`],
/// [`Virtc::finish`]): every verb the tests run ends well within it (a boot
/// under TCG and a container's run included); it only turns a hang into a
/// failure.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// How long a pipe of a virtc process that exited may stay open (held by
/// something it started) before its output counts as never ending.
pub const OUTPUT_GRACE: Duration = Duration::from_secs(60);

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the
/// returned channel (none when there is no pipe).
fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// A virtc invocation bound to one runtime root and guest image.
#[derive(Debug, Clone)]
pub struct Virtc {
    /// The binary.
    pub exe: PathBuf,
    /// `--root`.
    pub root: PathBuf,
    /// `--image-dir`.
    pub image_dir: PathBuf,
}

/// What one virtc process did.
#[derive(Debug)]
pub struct Ran {
    /// The command line, for messages.
    pub line: String,
    /// The exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Ran {
    fn from_output(line: String, out: Output) -> Self {
        Self {
            line,
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Fails unless the process exited 0.
    pub fn success(self) -> Result<Self> {
        if self.code != Some(0) {
            bail!("{self}");
        }
        Ok(self)
    }

    /// Its stdout as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("stdout is not JSON:\n{self}"))
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.line, self.code, self.stdout, self.stderr
        )
    }
}

impl Virtc {
    /// Builds virtc if needed, for this root and image directory.
    pub fn new(root: &Path, image_dir: &Path) -> Result<Self> {
        Ok(Self {
            exe: virtc_path()?,
            root: root.to_owned(),
            image_dir: image_dir.to_owned(),
        })
    }

    /// Runs `virtc --root R --image-dir I <args>` to completion, as its own
    /// process (blocking: call from a blocking context or a plain test);
    /// fails when it has not ended after [`RUN_TIMEOUT`].
    pub fn run<I, S>(&self, args: I) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run_env(&[], args)
    }

    /// [`Self::run`] with extra environment variables (such as `VC_FAULT`).
    pub fn run_env<I, S>(&self, env: &[(&str, &str)], args: I) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (line, mut cmd) = self.command(args);
        let child = cmd
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        Self::finish(line, child)
    }

    /// The command line (for messages) and a command ready to spawn, its
    /// stdin on /dev/null.
    pub fn command<I, S>(&self, args: I) -> (String, Command)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let line = std::iter::once("virtc".into())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--image-dir")
            .arg(&self.image_dir)
            .args(&args)
            .stdin(Stdio::null());
        (line, cmd)
    }

    /// Collects a spawned command's output as a [`Ran`]; kills it and fails
    /// when it has not ended after [`RUN_TIMEOUT`], or its output has not
    /// ended [`OUTPUT_GRACE`] after it exited.
    pub fn finish(line: String, mut child: std::process::Child) -> Result<Ran> {
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let ended = super::exits_within(child.id(), RUN_TIMEOUT)
            .with_context(|| format!("cannot wait for `{line}`"))?;
        if !ended {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.recv_timeout(OUTPUT_GRACE).unwrap_or_default();
            bail!(
                "`{line}` did not end within {RUN_TIMEOUT:?}; killed; its stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for `{line}`"))?;
        let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>, what: &str| {
            rx.recv_timeout(OUTPUT_GRACE).map_err(|_| {
                anyhow::anyhow!(
                    "the {what} of `{line}` did not end within {OUTPUT_GRACE:?} of its exit"
                )
            })
        };
        let out = Output {
            status,
            stdout: collect(stdout, "stdout")?,
            stderr: collect(stderr, "stderr")?,
        };
        Ok(Ran::from_output(line, out))
    }

    /// Runs virtc as the leader of its own process group (killed, group and
    /// all, if this thread panics), its output in files under `scratch`;
    /// fails when it has not ended after `timeout`.
    pub fn run_bounded<I, S>(&self, args: I, scratch: &Path, timeout: Duration) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (line, mut cmd) = self.command(args);
        let out_path = scratch.join("stdout");
        let err_path = scratch.join("stderr");
        let file = |p: &Path| {
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))
        };
        cmd.stdout(file(&out_path)?).stderr(file(&err_path)?);
        let mut guard = super::ChildGuard::spawn(&line, &mut cmd)?;
        let status = match guard
            .wait_timeout(timeout)
            .with_context(|| format!("cannot wait for `{line}`"))?
        {
            Some(status) => status,
            None => {
                guard.kill();
                let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
                bail!("`{line}` did not end within {timeout:?}; its stderr:\n{stderr}");
            }
        };
        Ok(Ran {
            line,
            code: status.code(),
            stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        })
    }

    /// Runs a verb that must die at fault point `point` (`VC_FAULT`, see
    /// `vc_host::fault`): fails unless virtc was killed there.
    pub fn killed_at<S: AsRef<OsStr>>(&self, point: &str, args: &[S]) -> Result<Ran> {
        let ran = self.run_env(&[(vc_host::fault::ENV, point)], args)?;
        if !(ran.code.is_none() && ran.stderr.contains(&format!("fault point {point}"))) {
            bail!("expected a death at {point}: {ran}");
        }
        Ok(ran)
    }

    /// Runs virtc and fails unless it exits 0.
    pub fn ok<I, S>(&self, args: I) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.run(args)?.success()
    }
}
