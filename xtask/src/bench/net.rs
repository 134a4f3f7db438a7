//! `cargo xtask bench net`: TCP from a peer network namespace over a veth (upload and download
//! throughput, 1-byte round trip) to three servers, on three paths measured in the same run:
//!
//! - **pod**: a container of a pod whose namespace is mirrored into its VM (tc `mirred` between
//!   the veth and the pod's tap, the agent, the container);
//! - **VM with a plain tap** (the floor, [`super::net_floor`]): the same kernel, machine, vCPUs
//!   and memory, a static init and busybox serving over a tap bridged to the veth;
//! - **bare veth** (a reference line): the same servers in the veth's namespace on the host.
//!
//! Every path runs the same busybox `nc -ll` servers, which start a process per connection.
//! Throughput is timed from the server's process running (upload: after 1 MiB written through
//! a small send buffer, which the server must have read; download: from the first byte) to the
//! end; the time from connecting to the download's first byte
//! (the server's process start) is reported on its own. Runs alternate between the paths so
//! host load drifts hit all of them; medians are printed with the pod's ratios to the floor
//! (goals: upload and download >= 0.8, round trip <= 1.25x).
//!
//! Namespaces (`ip netns`, iproute2 from `cargo xtask deps`), the floor's QEMU and the reference
//! servers are removed by guards ([`super::net_ns`]); the pod is stopped and deleted whatever
//! happens. Addresses: 192.0.2.0/24 only, inside the namespaces made here.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use vc_host::config::{ContainerConfig, PodConfig};
use vc_host::id::{ContainerId, PodId};

use super::inputs::{rootfs, scratch, tokio_runtime, vc_runtime, Image};
use super::net_floor::NetFloor;
use super::net_ns::{join, Netns, SERVER_IP};
use super::report::{Figure, Goal, Outcome, Unit};
use super::stats::Summary;
use crate::ctx::{self, Ctx};

/// Bytes moved each way in one throughput sample.
const TRANSFER: usize = 32 << 20;
/// Round trips in one latency sample (after 20 unmeasured ones).
const ROUND_TRIPS: usize = 200;
/// The servers, identical on every path.
const SERVERS: &str = "busybox nc -ll -p 5001 -e busybox cat & \
     busybox nc -ll -p 5002 -e busybox dd of=/dev/null bs=65536 & \
     busybox nc -ll -p 5003 -e busybox dd if=/dev/zero bs=65536 count=512 & wait";
/// Unmeasured bytes sent before an upload is timed, through a send buffer of PRIME_SNDBUF
/// (the kernel doubles it); the server's initial receive buffer is 128 KiB (`tcp_rmem`).
const PRIME: usize = 1 << 20;
const PRIME_SNDBUF: libc::c_int = 64 << 10;
/// The send buffer of the timed upload (the default maximum, `wmem_max` permitting).
const SNDBUF: libc::c_int = 4 << 20;
/// Goals of the pod against the floor (issue 14).
const GOAL_THROUGHPUT: f64 = 0.8;
const GOAL_RTT: f64 = 1.25;

/// One sample of each measure.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// TRANSFER bytes up, after PRIME bytes (the server reads), to the server's close.
    upload: Duration,
    /// TRANSFER bytes down, from the first byte to the end (scaled from the bytes after the
    /// first read).
    download: Duration,
    rtt: Duration,
    /// From connecting to the download server to its first byte: the server process's start
    /// (`nc` forks and executes `dd`).
    server_start: Duration,
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
    // Upload: TRANSFER bytes into `dd of=/dev/null`, until the server closes, after PRIME
    // unmeasured bytes written through a small send buffer: they cannot all wait in the two
    // sockets' buffers, so when they are written `dd` runs and reads.
    let mut s = connect(at(5002)?)?;
    let chunk = vec![0x5au8; 64 << 10];
    set_sndbuf(&s, PRIME_SNDBUF)?;
    for _ in 0..PRIME / chunk.len() {
        s.write_all(&chunk)?;
    }
    set_sndbuf(&s, SNDBUF)?;
    let start = Instant::now();
    for _ in 0..TRANSFER / chunk.len() {
        s.write_all(&chunk)?;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    let upload = start.elapsed();
    // Download: 32 MiB from `dd if=/dev/zero`, from the first byte to EOF; the time from
    // connecting to the first byte is the server's start.
    let mut s = connect(at(5003)?)?;
    let connected = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut first = None;
    let mut got = 0;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if first.is_none() {
            first = Some((Instant::now(), n));
        }
        got += n;
    }
    let end = Instant::now();
    if got != TRANSFER {
        bail!("downloaded {got} bytes, expected {TRANSFER}");
    }
    let (first_at, first_len) = first.context("no byte downloaded")?;
    let server_start = first_at - connected;
    // The bytes after the first read, scaled to TRANSFER.
    let download = (end - first_at).mul_f64(TRANSFER as f64 / (TRANSFER - first_len).max(1) as f64);
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
        server_start,
    })
}

/// `SO_SNDBUF` of `s`.
fn set_sndbuf(s: &TcpStream, bytes: libc::c_int) -> Result<()> {
    // SAFETY: setsockopt on an open socket with a pointer to an int that outlives the call and
    // its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set SO_SNDBUF");
    }
    Ok(())
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

/// Medians of one path's samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathSummary {
    /// Upload (peer -> server) in MiB/s.
    pub upload_mib_s: f64,
    /// Download (server -> peer) in MiB/s.
    pub download_mib_s: f64,
    /// 1-byte round trip.
    pub rtt: Duration,
    /// Connection to the download server's first byte.
    pub server_start: Duration,
}

impl PathSummary {
    fn of(samples: &[Sample]) -> Result<Self> {
        let median = |f: fn(&Sample) -> Duration| -> Result<Duration> {
            Ok(Summary::of(&samples.iter().map(f).collect::<Vec<_>>())
                .context("no samples")?
                .median)
        };
        Ok(Self {
            upload_mib_s: mib_s(median(|s| s.upload)?),
            download_mib_s: mib_s(median(|s| s.download)?),
            rtt: median(|s| s.rtt)?,
            server_start: median(|s| s.server_start)?,
        })
    }

    fn row(&self, name: &str) -> String {
        format!(
            "  {name:<28} {:>9.1} {:>9.1} {:>10} {:>12}",
            self.upload_mib_s,
            self.download_mib_s,
            us(self.rtt),
            super::stats::ms(self.server_start)
        )
    }
}

/// The pod against a path: upload and download ratios (pod / path) and the round trip's
/// (pod / path, lower is better).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ratios {
    pub upload: f64,
    pub download: f64,
    pub rtt: f64,
}

impl Ratios {
    fn of(pod: &PathSummary, other: &PathSummary) -> Self {
        Self {
            upload: pod.upload_mib_s / other.upload_mib_s,
            download: pod.download_mib_s / other.download_mib_s,
            rtt: pod.rtt.as_secs_f64() / other.rtt.as_secs_f64(),
        }
    }
}

/// What one `bench net` run found.
#[derive(Debug, Clone)]
pub(crate) struct NetResults {
    pub runs: u32,
    pub pod: PathSummary,
    /// The floor: a VM with a plain tap.
    pub floor: PathSummary,
    /// The reference: the servers in the veth's namespace, no VM.
    pub veth: PathSummary,
    /// `/proc/loadavg` before and after.
    pub load: (String, String),
}

impl NetResults {
    /// The pod against the floor (the goals' ratios).
    pub(crate) fn against_floor(&self) -> Ratios {
        Ratios::of(&self.pod, &self.floor)
    }

    fn print(&self) {
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "\nmedians of {} runs (peer namespace -> veth -> ...):",
            self.runs
        );
        println!(
            "  {:<28} {:>9} {:>9} {:>10} {:>12}",
            "path", "up MiB/s", "down MiB/s", "rtt", "server start"
        );
        println!("{}", self.pod.row(POD));
        println!("{}", self.floor.row(FLOOR));
        println!("{}", self.veth.row(VETH));
        let f = self.against_floor();
        println!("pod / floor:");
        println!(
            "  upload   {:.3} (goal >= {GOAL_THROUGHPUT}: {})",
            f.upload,
            verdict(f.upload >= GOAL_THROUGHPUT)
        );
        println!(
            "  download {:.3} (goal >= {GOAL_THROUGHPUT}: {})",
            f.download,
            verdict(f.download >= GOAL_THROUGHPUT)
        );
        println!(
            "  rtt      {:.2}x (goal <= {GOAL_RTT}x: {})",
            f.rtt,
            verdict(f.rtt <= GOAL_RTT)
        );
        let v = Ratios::of(&self.pod, &self.veth);
        println!(
            "pod / {VETH}: upload {:.3}, download {:.3}, rtt {:.1}x",
            v.upload, v.download, v.rtt
        );
        println!(
            "host load (/proc/loadavg) before: {}, after: {}",
            self.load.0, self.load.1
        );
    }
}

impl NetResults {
    /// The results for the report: each measure of the pod against the floor (with its goal)
    /// and against the bare veth.
    fn outcome(&self) -> Outcome {
        let mut outcome = Outcome::new(
            "net",
            format!(
                "{} MiB upload and download and {ROUND_TRIPS} one-byte round trips between a \
                 peer namespace and busybox nc servers, over a veth: in a container of a pod \
                 whose namespace is mirrored into its VM; in the floor, a VM on the same \
                 kernel, machine, vCPUs and memory with a static init, whose plain tap is \
                 bridged to the veth; and on the host at the bare veth (reference); {} runs \
                 alternating, medians.",
                TRANSFER >> 20,
                self.runs
            ),
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (pod, floor, veth) = (&self.pod, &self.floor, &self.veth);
        outcome.figures.extend([
            Figure::new("upload", Unit::MibPerS, pod.upload_mib_s)
                .floor(FLOOR, floor.upload_mib_s)
                .goal(Goal::RatioAtLeast(GOAL_THROUGHPUT)),
            Figure::new("download", Unit::MibPerS, pod.download_mib_s)
                .floor(FLOOR, floor.download_mib_s)
                .goal(Goal::RatioAtLeast(GOAL_THROUGHPUT)),
            Figure::new("1-byte round trip, median", Unit::Us, us(pod.rtt))
                .floor(FLOOR, us(floor.rtt))
                .goal(Goal::RatioAtMost(GOAL_RTT)),
            Figure::ms(
                "download server start (connect to first byte)",
                pod.server_start,
            )
            .floor_ms(FLOOR, floor.server_start),
            Figure::new("upload against the veth", Unit::MibPerS, pod.upload_mib_s)
                .floor(VETH, veth.upload_mib_s),
            Figure::new(
                "download against the veth",
                Unit::MibPerS,
                pod.download_mib_s,
            )
            .floor(VETH, veth.download_mib_s),
            Figure::new("1-byte round trip against the veth", Unit::Us, us(pod.rtt))
                .floor(VETH, us(veth.rtt)),
        ]);
        outcome
    }
}

/// The paths' names as printed.
const POD: &str = "pod";
const FLOOR: &str = "VM with a plain tap (floor)";
const VETH: &str = "bare veth (reference)";

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

pub(crate) fn run(ctx: &Ctx, runs: u32) -> Result<Outcome> {
    let image = Image::locate(ctx)?;
    let manifest = image.manifest()?;
    let rootfs = rootfs(ctx)?;
    let results = tokio_runtime()?.block_on(bench(&image, &manifest, &rootfs, runs))?;
    results.print();
    Ok(results.outcome())
}

async fn bench(
    image: &Image,
    manifest: &guest_image::Manifest,
    rootfs: &Path,
    runs: u32,
) -> Result<NetResults> {
    let load_before = loadavg();
    let tmp = scratch("vn")?;
    let rt = vc_runtime(tmp.path(), &image.dir)?;
    let pod_id = PodId::new("netbench").context("pod id")?;
    let mut config = PodConfig::new(pod_id.clone());

    // The reference: two namespaces and a veth, the servers in one.
    let veth_server = Netns::new("vs")?;
    let veth_peer = Netns::new("vp")?;
    join(&veth_server, &veth_peer, true)?;
    let _veth_servers = veth_server.spawn(
        "busybox".as_ref(),
        &["sh", "-c", SERVERS],
        None,
        "the reference servers",
    )?;
    // The floor: the pod's VM settings, a plain tap.
    ctx::step("building the network floor's initrd and booting it (a VM with a plain tap)");
    let mut vm = config.vm.clone();
    vm.kernel = Some(image.paths.kernel.clone());
    vm.initrd = Some(image.paths.initrd.clone());
    let settings = vm
        .validate()
        .context("the VM configuration is not usable on this host (try `cargo xtask deps`)")?;
    let floor = NetFloor::start(&settings, &image.dir, manifest, tmp.path(), SERVERS)?;
    // The pod: its namespace mirrored into the VM, the same servers in a container.
    let pod_ns = Netns::new("ps")?;
    let pod_peer = Netns::new("pp")?;
    join(&pod_ns, &pod_peer, true)?;
    config.netns = Some(pod_ns.path());
    config.containers.push(ContainerConfig::new(
        ContainerId::new("servers").context("container id")?,
        rootfs,
        vec!["/bin/sh".to_owned(), "-c".to_owned(), SERVERS.to_owned()],
    ));
    ctx::step(format!(
        "{runs} runs each: {} MiB upload and download and {ROUND_TRIPS} 1-byte round trips, \
         peer namespace -> {POD}, {FLOOR}, {VETH}",
        TRANSFER >> 20
    ));
    rt.run_pod(config).await.context("cannot start the pod")?;
    let paths = [(POD, &pod_peer), (FLOOR, &floor.peer), (VETH, &veth_peer)];
    let measured = async {
        for (name, peer) in paths {
            measure_from(peer).with_context(|| format!("{name} warm-up"))?;
        }
        let mut samples: [Vec<Sample>; 3] = Default::default();
        for i in 0..runs {
            let mut line = format!("  run {:>2}", i + 1);
            for ((name, peer), out) in paths.iter().zip(samples.iter_mut()) {
                let s = measure_from(peer).with_context(|| format!("{name} run {}", i + 1))?;
                line.push_str(&format!(
                    "  {name}: {:.1}/{:.1} MiB/s {} {}",
                    mib_s(s.upload),
                    mib_s(s.download),
                    us(s.rtt),
                    super::stats::ms(s.server_start)
                ));
                out.push(s);
            }
            println!("{line}");
        }
        Ok::<_, anyhow::Error>(samples)
    }
    .await;
    let stopped = rt.stop_pod(&pod_id).await;
    let deleted = rt.delete_pod(&pod_id).await;
    let diagnostics = floor.diagnostics();
    drop(floor);
    let [pod, floor, veth] = measured.with_context(|| diagnostics)?;
    stopped.context("stop_pod failed")?;
    deleted.context("delete_pod failed")?;
    drop(rt);
    tmp.close()
        .context("cannot remove the temporary directory")?;
    Ok(NetResults {
        runs,
        pod: PathSummary::of(&pod)?,
        floor: PathSummary::of(&floor)?,
        veth: PathSummary::of(&veth)?,
        load: (load_before, loadavg()),
    })
}
