//! Network fixtures for the pod networking tests: named network namespaces
//! (`ip netns`) and veth pairs between them, all removed by Drop guards, and
//! code run inside a namespace from a thread of the test (`setns(2)`), so the
//! peer side of a test can use plain std sockets.
//!
//! Network safety: only 192.0.2.0/24 and 198.51.100.0/24, only inside
//! namespaces made here, never a route to the machine's real interfaces.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use vc_host::id::PodId;

use super::pod::TestRuntime;

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

/// The pod end of the first veth of [`Pair`].
pub const POD_MAC: &str = "02:00:c0:00:02:02";
/// The peer end of the first veth of [`Pair`].
pub const PEER_MAC: &str = "02:00:c0:00:02:01";
/// The pod end of a second veth (198.51.100.0/24).
pub const POD_MAC2: &str = "02:00:c6:33:64:02";
/// The peer end of a second veth.
pub const PEER_MAC2: &str = "02:00:c6:33:64:01";

/// A MAC address in the guest's terms.
pub fn mac(s: &str) -> [u8; 6] {
    s.parse::<vc_host::hypervisor::MacAddr>()
        .expect("test MAC")
        .0
}

/// A pod namespace and a peer namespace joined by a veth:
/// pod `eth0` 192.0.2.2/24 (default route via the peer), peer `p0` 192.0.2.1/24.
pub struct Pair {
    /// The pod's namespace.
    pub pod: Netns,
    /// The peer's.
    pub peer: Netns,
}

impl Pair {
    /// Both namespaces and the veth.
    pub fn new() -> Result<Self> {
        let pod = Netns::new("p")?;
        let peer = Netns::new("q")?;
        veth(
            &End {
                ns: &pod,
                name: "eth0",
                mac: POD_MAC,
                addr: "192.0.2.2/24",
            },
            &End {
                ns: &peer,
                name: "p0",
                mac: PEER_MAC,
                addr: "192.0.2.1/24",
            },
        )?;
        pod.ip(&["route", "add", "default", "via", "192.0.2.1", "dev", "eth0"])?;
        Ok(Self { pod, peer })
    }

    /// A second veth: pod `eth1` 198.51.100.2/24, peer `p1` 198.51.100.1/24.
    pub fn second_link(&self) -> Result<()> {
        veth(
            &End {
                ns: &self.pod,
                name: "eth1",
                mac: POD_MAC2,
                addr: "198.51.100.2/24",
            },
            &End {
                ns: &self.peer,
                name: "p1",
                mac: PEER_MAC2,
                addr: "198.51.100.1/24",
            },
        )
    }
}

/// Connects from the current namespace, retrying while the server starts.
pub fn connect(addr: &str) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr}")),
        }
    }
}

/// Sends `payload` to an echo server and returns what came back until EOF.
pub fn echo_through(addr: &str, payload: Vec<u8>) -> Result<Vec<u8>> {
    let stream = connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    // Shared with the clone: a peer that stops reading fails the write too.
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        writer.write_all(&payload)?;
        writer.shutdown(Shutdown::Write)
    });
    let mut back = Vec::new();
    (&stream).read_to_end(&mut back)?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    Ok(back)
}

/// `len` bytes of every value, in an order that is not a plain cycle.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// TCP both ways between a pod's containers and `peer`, byte-exact: the peer
/// sends 1 MiB to an echo server in a container listening on `pod_addr`
/// and gets it back; a container connects to a server of the peer on
/// `peer_addr`, and each reads the other's line. Container ids are suffixed
/// with `pod_addr`, so a pod can run this once per address.
pub async fn tcp_both_ways(
    t: &TestRuntime,
    pod: &PodId,
    peer: &Netns,
    pod_addr: &str,
    peer_addr: &str,
) -> Result<()> {
    let tag = pod_addr.replace(['.', ':'], "-");
    // Peer -> container: an echo server in the container, 1 MiB each way.
    let server = t
        .start_container(
            pod,
            t.container(
                &format!("echo{tag}"),
                &["nc", "-l", "-p", "5000", "-e", "cat"],
            ),
        )
        .await?;
    let sent = payload(1 << 20);
    let expected = sent.clone();
    let target = format!("{pod_addr}:5000");
    let back = peer
        .run(move || echo_through(&target, sent))
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    ensure!(
        back.len() == expected.len() && back == expected,
        "echo through {pod_addr} differs: sent {} bytes, got {}",
        expected.len(),
        back.len()
    );
    let out = t.output(pod, &server).await?;
    ensure!(out.exit_code == 0, "echo server: {}", text(&out.stderr));

    // Container -> peer: a server in the peer namespace.
    let bind = format!("{peer_addr}:6000");
    let listener = peer
        .run(move || Ok(TcpListener::bind(&bind)?))
        .join()
        .map_err(|_| anyhow::anyhow!("peer thread panicked"))??;
    let peer_server = std::thread::spawn(move || -> Result<String> {
        let (conn, from) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line)?;
        (&conn).write_all(b"hello from the peer\n")?;
        conn.shutdown(Shutdown::Both)?;
        Ok(format!("{from} {line}"))
    });
    let script = format!("echo hello from the container | nc {peer_addr} 6000");
    let out = t
        .run_container(
            pod,
            t.container(&format!("client{tag}"), &["sh", "-c", &script]),
        )
        .await?;
    ensure!(out.exit_code == 0, "client: {}", text(&out.stderr));
    ensure!(
        text(&out.stdout) == "hello from the peer\n",
        "{}",
        text(&out.stdout)
    );
    let got = peer_server
        .join()
        .map_err(|_| anyhow::anyhow!("peer server panicked"))??;
    ensure!(
        got.starts_with(&format!("{pod_addr}:")) && got.ends_with(" hello from the container\n"),
        "{got}"
    );
    Ok(())
}
