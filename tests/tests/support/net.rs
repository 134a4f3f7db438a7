//! Network fixtures for the pod networking tests: named network namespaces
//! (`ip netns`) and veth pairs between them, all removed by Drop guards, and
//! code run inside a namespace from a thread of the test (`setns(2)`), so the
//! peer side of a test can use plain std sockets.
//!
//! Network safety: only 192.0.2.0/24 and 198.51.100.0/24, only inside
//! namespaces made here, never a route to the machine's real interfaces.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// Runs `ip` with `args` and fails with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a program and fails with its stderr; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out: Output = Command::new(program).args(args).output().with_context(|| {
        format!("cannot run {program}: install iproute2 with `cargo xtask deps`")
    })?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A named network namespace, deleted on drop (which also deletes the veths
/// whose ends are in it).
#[derive(Debug)]
pub struct Netns {
    /// The name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// A new namespace named `vct<pid>-<n><tag>` with loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "vct{}-{}{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `/var/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <name> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs a program in the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Runs `work` on a thread that entered this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = self.path();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("cannot enter the namespace")?;
            work()
        })
    }

    /// A sorted, comparable picture of the namespace: links (name, MAC, MTU,
    /// state), addresses, routes, neighbours and qdiscs.
    pub fn snapshot(&self) -> Result<String> {
        let mut out = String::new();
        for args in [
            &["-o", "link", "show"][..],
            &["-o", "addr", "show"],
            &["route", "show", "table", "all"],
            &["neigh", "show", "nud", "permanent"],
        ] {
            let mut lines: Vec<String> = self.ip(args)?.lines().map(|l| l.to_owned()).collect();
            lines.sort();
            out.push_str(&lines.join("\n"));
            out.push('\n');
        }
        out.push_str(&run("tc", &["-n", &self.name, "qdisc", "show"])?);
        // Filters hang off a qdisc: no ingress qdisc, no ingress filter.
        Ok(out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cannot delete the test namespace {}: {e:#}", self.name);
        }
    }
}

/// One end of a veth pair as configured.
#[derive(Debug, Clone)]
pub struct End<'a> {
    /// The namespace.
    pub ns: &'a Netns,
    /// The interface name.
    pub name: &'a str,
    /// The MAC address.
    pub mac: &'a str,
    /// The address with its prefix, such as `192.0.2.2/24`.
    pub addr: &'a str,
}

/// Joins two namespaces with a veth pair, gives each end its MAC and
/// address, and brings both up. Deleted with either namespace.
pub fn veth(a: &End<'_>, b: &End<'_>) -> Result<()> {
    // Made in `a`'s namespace with the peer moved to `b`'s at once, so no end
    // ever exists in the test process's own namespace.
    a.ns.ip(&[
        "link", "add", a.name, "address", a.mac, "type", "veth", "peer", "name", b.name, "address",
        b.mac, "netns", &b.ns.name,
    ])?;
    for end in [a, b] {
        end.ns.ip(&["addr", "add", end.addr, "dev", end.name])?;
        end.ns.ip(&["link", "set", end.name, "up"])?;
    }
    // IPv6 duplicate address detection changes the namespace for a moment
    // after a link comes up; wait it out so snapshots compare.
    let deadline = Instant::now() + Duration::from_secs(10);
    for end in [a, b] {
        while !end
            .ns
            .ip(&["-6", "addr", "show", "tentative"])?
            .trim()
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("IPv6 addresses in {} stay tentative", end.ns.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}
