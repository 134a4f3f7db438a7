//! Helpers for the process I/O tests: deterministic test data, hashing while
//! reading, reading a terminal until a text shows, the agent's resident
//! memory read from the guest, and the host's vsock daemon's.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use vc_host::id::{ContainerId, PodId};
use vc_host::Runtime;

/// `n` bytes of pseudo-random data from `seed` (xorshift64*), with NUL bytes
/// and every other byte value.
pub fn data(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`hash_stream`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes read.
    pub len: u64,
    /// Hex SHA-256 of them.
    pub sha256: String,
}

/// Reads `stream` to end-of-file, hashing as it goes; `pause` is called after
/// every `every` bytes (a slow reader), with the count so far.
pub async fn hash_stream<R, F, Fut>(mut stream: R, every: u64, mut pause: F) -> Result<Hashed>
where
    R: AsyncRead + Unpin,
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    let mut next_pause = every;
    loop {
        let n = stream.read(&mut buf).await.context("reading a stream")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
        if len >= next_pause {
            next_pause += every;
            pause(len).await?;
        }
    }
    Ok(Hashed {
        len,
        sha256: hex(&hasher.finalize()),
    })
}

/// Reads `stream` into `seen` until `needle` shows after byte `from`; returns
/// the offset past it. Fails after `timeout` or at end-of-file.
pub async fn read_until<R: AsyncRead + Unpin>(
    stream: &mut R,
    seen: &mut Vec<u8>,
    from: usize,
    needle: &str,
    timeout: Duration,
) -> Result<usize> {
    let find = |seen: &[u8]| {
        seen.get(from..).and_then(|tail| {
            tail.windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .map(|p| from + p + needle.len())
        })
    };
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = find(seen) {
                return Ok(end);
            }
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                bail!("end of stream before {needle:?}");
            }
            seen.extend_from_slice(&buf[..n]);
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(result) => result.with_context(|| {
            format!(
                "waiting for {needle:?}; got {:?}",
                String::from_utf8_lossy(seen)
            )
        }),
        Err(_) => bail!(
            "{needle:?} did not show within {timeout:?}; got {:?}",
            String::from_utf8_lossy(seen)
        ),
    }
}

/// The agent's (guest PID 1) resident memory in KiB.
///
/// A container cannot see the agent: it has its own PID namespace, and its
/// `/proc` shows only its own processes. So this runs a process in the VM
/// outside any container (`Runtime::enter_pod`, the agent's exec with an empty
/// container id), which shares the agent's PID namespace and `/proc`. The VM's
/// initramfs has no tools, so the program is the container's busybox, reached
/// through the pod's shared directory at its guest path.
pub async fn agent_rss_kib(rt: &Runtime, pod: &PodId, container: &ContainerId) -> Result<u64> {
    let busybox = format!(
        "{}/bin/busybox",
        vc_host::runtime::share::guest_rootfs_path(container)
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        rt.enter_pod(pod, vec![busybox, "cat".into(), "/proc/1/status".into()]),
    )
    .await
    .context("reading the agent's /proc/1/status from the VM did not end within 60 s")?
    .context("reading the agent's /proc/1/status from the VM")?;
    vm_rss(&String::from_utf8_lossy(&out.stdout))
}

/// The resident memory (`VmRSS`, KiB) of the pod's hybrid vsock daemon
/// (`vhost-device-vsock`) on the host: every byte between the guest and the
/// host passes through it.
pub async fn vsock_daemon_rss_kib(rt: &Runtime, pod: &PodId) -> Result<u64> {
    let status = rt.pod_status(pod).await?;
    let daemon = status
        .processes
        .iter()
        .find(|p| p.name == "vhost-device-vsock")
        .with_context(|| format!("no vsock daemon among {:?}", status.processes))?;
    let path = format!("/proc/{}/status", daemon.pid);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    vm_rss(&text)
}

/// The `VmRSS` of a `/proc/PID/status` text, in KiB.
fn vm_rss(status: &str) -> Result<u64> {
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS in the status: {status}"))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable {line:?}"))
}

/// Sets the window size of the terminal whose master is `master`.
pub fn set_window(master: &impl std::os::fd::AsRawFd, rows: u16, cols: u16) -> Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    nix::errno::Errno::result(rc).context("TIOCSWINSZ")?;
    Ok(())
}

/// Reads a pty master (blocking, with `poll`) into `seen` until `needle`
/// shows after byte `from`; returns the offset past it.
pub fn read_master_until(
    master: &std::os::fd::OwnedFd,
    seen: &mut Vec<u8>,
    from: usize,
    needle: &str,
    timeout: Duration,
) -> Result<usize> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let until = std::time::Instant::now() + timeout;
    loop {
        if let Some(p) = seen
            .get(from..)
            .and_then(|t| t.windows(needle.len()).position(|w| w == needle.as_bytes()))
        {
            return Ok(from + p + needle.len());
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!(
                "{needle:?} did not show within {timeout:?}; got {:?}",
                String::from_utf8_lossy(seen)
            );
        }
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
        if poll(&mut fds, PollTimeout::from(ms))? == 0 {
            continue;
        }
        let mut buf = [0u8; 4096];
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(master), &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EIO) => bail!(
                "the terminal closed before {needle:?}; got {:?}",
                String::from_utf8_lossy(seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e).context("reading the pty master"),
        }
    }
}
