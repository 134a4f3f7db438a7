//! `cargo xtask bench net`: TCP between a peer network namespace and a container of a pod whose
//! namespace is mirrored into its VM (upload and download throughput, 1-byte round trip), and in
//! the same run the floor: the same servers (busybox `nc -ll`) in a plain namespace reached over a
//! veth alone. Runs alternate between the two paths so host load drifts hit both; medians are
//! printed with their ratio.
//!
//! Namespaces (`ip netns`, iproute2 from `cargo xtask deps`) and the floor's server processes
//! are removed by guards; the pod is stopped and deleted whatever happens. Addresses: 192.0.2.0/24
//! only, inside the namespaces made here.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use vc_host::config::{ContainerConfig, PodConfig};
use vc_host::id::{ContainerId, PodId};

use super::inputs::{rootfs, scratch, tokio_runtime, vc_runtime, Image};
use super::report::{Figure, Outcome, Unit};
use super::stats::Summary;
use crate::ctx::{self, Ctx};

/// Bytes moved each way in one throughput sample.
const TRANSFER: usize = 32 << 20;
/// Round trips in one latency sample (after 20 unmeasured ones).
const ROUND_TRIPS: usize = 200;
/// The servers, identical for the pod's container and the floor namespace.
const SERVERS: &str = "busybox nc -ll -p 5001 -e busybox cat & \
     busybox nc -ll -p 5002 -e busybox dd of=/dev/null bs=65536 & \
     busybox nc -ll -p 5003 -e busybox dd if=/dev/zero bs=65536 count=512 & wait";
/// Server address (the pod's or the floor's) and the peer's.
const SERVER_IP: &str = "192.0.2.2";
const PEER_CIDR: &str = "192.0.2.1/24";
const SERVER_CIDR: &str = "192.0.2.2/24";

fn ip(args: &[&str]) -> Result<()> {
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

/// A named network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Result<Self> {
        let name = format!("vcb{}{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = Self(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// `server` and `peer` joined by a veth: server end `eth0` 192.0.2.2/24, peer end 192.0.2.1/24.
fn join(server: &Netns, peer: &Netns) -> Result<()> {
    ip(&[
        "-n", &server.0, "link", "add", "eth0", "type", "veth", "peer", "name", "p0", "netns",
        &peer.0,
    ])?;
    ip(&["-n", &server.0, "addr", "add", SERVER_CIDR, "dev", "eth0"])?;
    ip(&["-n", &peer.0, "addr", "add", PEER_CIDR, "dev", "p0"])?;
    ip(&["-n", &server.0, "link", "set", "eth0", "up"])?;
    ip(&["-n", &peer.0, "link", "set", "p0", "up"])
}

/// The floor's servers: a process group, killed by id on drop.
struct Servers(Child);

impl Drop for Servers {
    fn drop(&mut self) {
        // SAFETY: killpg with our own child's pid, which is its process group id (process_group(0));
        // the child is not reaped yet, so the id cannot have been reused.
        unsafe { libc::killpg(self.0.id() as libc::pid_t, libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// One sample of each measure.
#[derive(Debug, Clone, Copy)]
struct Sample {
    upload: Duration,
    download: Duration,
    rtt: Duration,
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(120)))?;
                return Ok(s);
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {addr}")),
        }
    }
}

/// Upload, download and round trip from the calling thread's namespace.
fn measure(server: &str) -> Result<Sample> {
    let at = |port: u16| -> Result<SocketAddr> { Ok(format!("{server}:{port}").parse()?) };
    // Upload: TRANSFER bytes into `dd of=/dev/null`, until the server closes.
    let mut s = connect(at(5002)?)?;
    let chunk = vec![0x5au8; 64 << 10];
    let start = Instant::now();
    for _ in 0..TRANSFER / chunk.len() {
        s.write_all(&chunk)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    let upload = start.elapsed();
    // Download: 32 MiB from `dd if=/dev/zero`, to EOF.
    let mut s = connect(at(5003)?)?;
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let download = start.elapsed();
    if got != TRANSFER {
        bail!("downloaded {got} bytes, expected {TRANSFER}");
    }
    // Round trip: one byte to `cat` and back.
    let mut s = connect(at(5001)?)?;
    let mut rtts = Vec::with_capacity(ROUND_TRIPS);
    let mut byte = [0u8; 1];
    for i in 0..ROUND_TRIPS + 20 {
        let t = Instant::now();
        s.write_all(b"x")?;
        s.read_exact(&mut byte)?;
        if i >= 20 {
            rtts.push(t.elapsed());
        }
    }
    let rtt = Summary::of(&rtts).context("no round trips")?.median;
    Ok(Sample {
        upload,
        download,
        rtt,
    })
}

/// Runs [`measure`] on a thread inside `peer`.
fn measure_from(peer: &Netns) -> Result<Sample> {
    let path = peer.path();
    std::thread::spawn(move || -> Result<Sample> {
        let ns = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: setns on an open namespace descriptor; it changes only this thread's namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot enter the peer namespace");
        }
        measure(SERVER_IP)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
}

/// Microseconds, for round trips.
fn us(d: Duration) -> String {
    format!("{:.0} us", d.as_secs_f64() * 1e6)
}

fn mib_s(d: Duration) -> f64 {
    TRANSFER as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let rootfs = rootfs(ctx)?;
    tokio_runtime()?.block_on(bench(&image.dir, &rootfs, runs))
}

async fn bench(image_dir: &Path, rootfs: &Path, runs: u32) -> Result<Outcome> {
    let tmp = scratch("vn")?;
    let rt = vc_runtime(tmp.path(), image_dir)?;

    // The floor: two namespaces and a veth, servers in one.
    let floor_server = Netns::new("fs")?;
    let floor_peer = Netns::new("fp")?;
    join(&floor_server, &floor_peer)?;
    use std::os::unix::process::CommandExt as _;
    let _servers = Servers(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &floor_server.0,
                "busybox",
                "sh",
                "-c",
                SERVERS,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("cannot start the floor's servers")?,
    );
    // The pod: its namespace mirrored into the VM, the same servers in a container.
    let pod_ns = Netns::new("ps")?;
    let pod_peer = Netns::new("pp")?;
    join(&pod_ns, &pod_peer)?;
    let pod_id = PodId::new("netbench").context("pod id")?;
    let mut config = PodConfig::new(pod_id.clone());
    config.netns = Some(pod_ns.path());
    config.containers.push(ContainerConfig::new(
        ContainerId::new("servers").context("container id")?,
        rootfs,
        vec!["/bin/sh".to_owned(), "-c".to_owned(), SERVERS.to_owned()],
    ));
    ctx::step(format!(
        "{runs} runs each: {} MiB upload and download and {ROUND_TRIPS} 1-byte round trips, \
         peer namespace -> container in a pod VM, and the floor: the same busybox nc servers in a \
         namespace over a veth alone",
        TRANSFER >> 20
    ));
    rt.run_pod(config).await.context("cannot start the pod")?;
    let measured = async {
        // Unmeasured warm-up of both paths.
        measure_from(&floor_peer).context("floor warm-up")?;
        measure_from(&pod_peer).context("pod warm-up")?;
        let mut floor = Vec::new();
        let mut pod = Vec::new();
        for i in 0..runs {
            let f = measure_from(&floor_peer).with_context(|| format!("floor run {}", i + 1))?;
            let p = measure_from(&pod_peer).with_context(|| format!("pod run {}", i + 1))?;
            println!(
                "  run {:>2}  pod: up {:>7.1} MiB/s down {:>7.1} MiB/s rtt {:>8}   \
                 floor: up {:>7.1} MiB/s down {:>7.1} MiB/s rtt {:>8}",
                i + 1,
                mib_s(p.upload),
                mib_s(p.download),
                us(p.rtt),
                mib_s(f.upload),
                mib_s(f.download),
                us(f.rtt)
            );
            floor.push(f);
            pod.push(p);
        }
        Ok::<_, anyhow::Error>((floor, pod))
    }
    .await;
    let stopped = rt.stop_pod(&pod_id).await;
    let deleted = rt.delete_pod(&pod_id).await;
    let (floor, pod) = measured?;
    stopped.context("stop_pod failed")?;
    deleted.context("delete_pod failed")?;

    let median = |v: &[Sample], f: fn(&Sample) -> Duration| -> Result<Duration> {
        Ok(Summary::of(&v.iter().map(f).collect::<Vec<_>>())
            .context("no samples")?
            .median)
    };
    println!("\nmedians of {runs} runs (pod = peer namespace <-> container in the VM; floor = veth alone):");
    let mut outcome = Outcome::new(
        "net",
        format!(
            "{} MiB upload and download and {ROUND_TRIPS} one-byte round trips between a peer \
             namespace and busybox nc servers in a container of a pod whose namespace is \
             mirrored into its VM, {runs} runs alternating with the floor, medians.",
            TRANSFER >> 20
        ),
    );
    const FLOOR: &str = "the same servers in a namespace over a veth alone";
    for (name, f) in [
        ("upload", (|s: &Sample| s.upload) as fn(&Sample) -> Duration),
        ("download", |s: &Sample| s.download),
    ] {
        let (p, fl) = (mib_s(median(&pod, f)?), mib_s(median(&floor, f)?));
        println!(
            "  {name:<9} pod {p:>8.1} MiB/s   floor {fl:>8.1} MiB/s   pod/floor {:.3}",
            p / fl
        );
        outcome
            .figures
            .push(Figure::new(name, Unit::MibPerS, p).floor(FLOOR, fl));
    }
    let (p, fl) = (median(&pod, |s| s.rtt)?, median(&floor, |s| s.rtt)?);
    println!(
        "  {:<9} pod {:>10}   floor {:>10}   pod/floor {:.1}x",
        "rtt",
        us(p),
        us(fl),
        p.as_secs_f64() / fl.as_secs_f64()
    );
    outcome.figures.push(
        Figure::new("1-byte round trip, median", Unit::Us, p.as_secs_f64() * 1e6)
            .floor(FLOOR, fl.as_secs_f64() * 1e6),
    );
    drop(rt);
    tmp.close()
        .context("cannot remove the temporary directory")?;
    Ok(outcome)
}
