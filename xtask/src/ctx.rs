//! Paths every command needs (workspace, cache, tools) and helpers to run child processes with the
//! command line shown and a clear error when they fail.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

/// Environment variable naming the cache directory (tools, kernel).
pub(crate) const CACHE_DIR_ENV: &str = "VC_CACHE_DIR";
/// Environment variable naming the container rootfs for tests.
pub(crate) const ROOTFS_ENV: &str = "VC_ROOTFS";

/// Paths shared by the commands.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// The workspace root (the directory of the top `Cargo.toml`).
    pub workspace: PathBuf,
    /// The cache directory outside the checkout.
    pub cache: PathBuf,
    /// The cargo executable that runs us.
    pub cargo: OsString,
}

impl Ctx {
    pub(crate) fn new() -> Result<Self> {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask is not inside a workspace")?
            .to_owned();
        let cache = cache_dir(
            std::env::var_os(CACHE_DIR_ENV),
            std::env::var_os("XDG_CACHE_HOME"),
            std::env::var_os("HOME"),
        )?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Self {
            workspace,
            cache,
            cargo,
        })
    }

    /// Root of `cargo install --root`: the tools land in `<tools_root>/bin`.
    pub(crate) fn tools_root(&self) -> PathBuf {
        self.cache.join("tools")
    }

    /// Directory of the installed helper tools.
    pub(crate) fn tools_bin(&self) -> PathBuf {
        self.tools_root().join("bin")
    }

    /// A `cargo` command run from the workspace root.
    pub(crate) fn cargo(&self) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.workspace);
        cmd
    }
}

/// `$VC_CACHE_DIR`, else `$XDG_CACHE_HOME/vc`, else `$HOME/.cache/vc`.
pub(crate) fn cache_dir(
    explicit: Option<OsString>,
    xdg: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    let non_empty = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(explicit) {
        return Ok(dir);
    }
    if let Some(dir) = non_empty(xdg) {
        return Ok(dir.join("vc"));
    }
    if let Some(dir) = non_empty(home) {
        return Ok(dir.join(".cache").join("vc"));
    }
    bail!("cannot find a cache directory: set {CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME")
}

/// Whether this process runs as root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints a step heading.
pub(crate) fn step(msg: impl std::fmt::Display) {
    eprintln!("==> {msg}");
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` with inherited stdio; fails when it does not exit 0.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let line = describe(cmd);
    eprintln!("    $ {line}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    let took = start.elapsed();
    if took.as_secs() >= 2 {
        eprintln!("    done in {:.1} s", took.as_secs_f64());
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails (showing stderr) when it does not exit 0.
pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).with_context(|| format!("`{line}` printed non-UTF-8 output"))
}

/// Whether an executable named `name` is on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_dir_precedence() {
        let d = |e: Option<&str>, x: Option<&str>, h: Option<&str>| {
            cache_dir(e.map(Into::into), x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            d(Some("/c"), Some("/x"), Some("/h")).expect("dir"),
            PathBuf::from("/c")
        );
        assert_eq!(
            d(Some(""), Some("/x"), Some("/h")).expect("dir"),
            PathBuf::from("/x/vc")
        );
        assert_eq!(
            d(None, None, Some("/h")).expect("dir"),
            PathBuf::from("/h/.cache/vc")
        );
        assert!(d(None, Some(""), None).is_err());
    }
}
