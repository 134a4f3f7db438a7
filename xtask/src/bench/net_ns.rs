//! What `bench net` builds its paths from: named network namespaces (`ip netns`, iproute2 from
//! `cargo xtask deps`) deleted on drop, the veth between a server namespace and its peer, and a
//! process group started in a namespace, killed by its id on drop.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _, Result};

/// The server end's address (the pod's, the floor guest's, the veth reference's).
pub(super) const SERVER_IP: &str = "192.0.2.2";
/// The server end's address with its prefix.
pub(super) const SERVER_CIDR: &str = "192.0.2.2/24";
/// The peer end's address with its prefix.
const PEER_CIDR: &str = "192.0.2.1/24";

/// Runs `ip ARGS`; fails with its stderr.
pub(super) fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip: install iproute2 with `cargo xtask deps`")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A named network namespace with `lo` up, deleted on drop (with every link in it).
pub(super) struct Netns(String);

impl Netns {
    pub(super) fn new(tag: &str) -> Result<Self> {
        let name = format!("vcb{}{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub(super) fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }

    /// `ip -n NAME ARGS`.
    pub(super) fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.0];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Starts `program ARGS` inside this namespace in a session (and process group) of its
    /// own, as the library starts QEMU (with the kernel's autogroup scheduling, a session is
    /// also a scheduling group), its output to `log` (discarded when `None`).
    pub(super) fn spawn<S: AsRef<OsStr>>(
        &self,
        program: &OsStr,
        args: &[S],
        log: Option<&Path>,
        what: &str,
    ) -> Result<Group> {
        use std::os::unix::process::CommandExt as _;
        let (stdout, stderr) = match log {
            Some(p) => {
                let f = std::fs::File::create(p)
                    .with_context(|| format!("cannot create {}", p.display()))?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.0])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {what}"))?;
        Ok(Group(child))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// `server` and `peer` joined by a veth, `eth0` in `server` and `p0` (192.0.2.1/24) in `peer`,
/// both up; `eth0` gets 192.0.2.2/24 when `server_address`.
pub(super) fn join(server: &Netns, peer: &Netns, server_address: bool) -> Result<()> {
    server.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "p0", "netns", &peer.0,
    ])?;
    if server_address {
        server.ip(&["addr", "add", SERVER_CIDR, "dev", "eth0"])?;
    }
    peer.ip(&["addr", "add", PEER_CIDR, "dev", "p0"])?;
    server.ip(&["link", "set", "eth0", "up"])?;
    peer.ip(&["link", "set", "p0", "up"])
}

/// A session and process group (`ip netns exec` execs the program, so the child's pid is the
/// program's and the group's id), killed by its id on drop.
pub(super) struct Group(Child);

impl Group {
    /// Whether the process is still running.
    pub(super) fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: killpg with our own child's pid, which is its process group id (setsid);
        // the child is not reaped yet, so the id cannot have been reused.
        unsafe { libc::killpg(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}
