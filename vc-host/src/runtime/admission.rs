//! Host-wide boot admission, and the boot deadline that follows the guest's
//! progress.
//!
//! Under TCG a guest's boot is CPU-bound: started all at once, sixteen VMs on
//! two cores each boot sixteen times slower and all miss any fixed deadline.
//! So at most `width` VMs boot at once on a host, among every process that
//! uses the same state root: a boot holds one of `width` slot files,
//! `<root>/locks/boot/slot-<i>`, with an exclusive `flock(2)` from just
//! before QEMU is launched until its agent answers (or the boot fails). A
//! process killed while it holds a slot releases it with its descriptors, so
//! a crashed caller never keeps a slot. Waiters try every slot without
//! blocking and, when all are taken, try again every [`RETRY`]: `flock`
//! cannot wait for "any of N" files.
//!
//! The width comes from [`RuntimeConfig::boot_width`](crate::config::RuntimeConfig):
//! by default the host's CPU count. Processes configured with different
//! widths share the first slots, so the host-wide bound is the largest width
//! in use.
//!
//! [`BootDeadline`] counts from admission. A boot fails when its console has
//! shown nothing new for [`BOOT_STALL`], or at the ceiling the pod's
//! configuration sets (`VmConfig::boot_timeout_secs`), whichever comes first:
//! a slow boot that keeps printing is given time, a stuck one is not.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;
use tracing::{debug, info};

pub use crate::host_defaults::{default_boot_width as default_width, MAX_BOOT_WIDTH as MAX_WIDTH};

/// How often a waiter tries the slots again.
pub const RETRY: Duration = Duration::from_millis(50);

/// How long a boot may go without new console output before it is declared
/// stuck.
pub const BOOT_STALL: Duration = Duration::from_secs(30);

/// Why a boot slot could not be taken.
#[derive(Debug, Error)]
pub enum AdmissionError {
    /// The slot directory or a slot file could not be made or locked.
    #[error("cannot {op} boot slot {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The boot slots of one state root.
#[derive(Debug, Clone)]
pub struct BootAdmission {
    dir: PathBuf,
    width: u32,
}

/// One admitted boot: the slot is held until this is dropped.
#[derive(Debug)]
pub struct BootPermit {
    _lock: Flock<File>,
    slot: u32,
    admitted_at: Instant,
}

impl BootPermit {
    /// Which slot is held.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// When the boot was admitted: its deadline counts from here.
    pub fn admitted_at(&self) -> Instant {
        self.admitted_at
    }
}

impl BootAdmission {
    /// The slots under `<root>/locks/boot`; `width` is clamped to
    /// 1..=[`MAX_WIDTH`].
    pub fn new(root: &Path, width: u32) -> Self {
        BootAdmission {
            dir: root.join("locks").join("boot"),
            width: width.clamp(1, MAX_WIDTH),
        }
    }

    /// How many boots may run at once.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Waits for a free slot and takes it. Unbounded: a queue of boots is
    /// served `width` at a time, and whoever waits can be cancelled (the
    /// future dropped) or killed without leaving anything held.
    pub async fn admit(&self, what: &str) -> Result<BootPermit, AdmissionError> {
        let started = Instant::now();
        let mut logged = false;
        loop {
            let dir = self.dir.clone();
            let width = self.width;
            let got = tokio::task::spawn_blocking(move || try_any(&dir, width))
                .await
                .map_err(|e| AdmissionError::Io {
                    op: "lock",
                    path: self.dir.clone(),
                    source: std::io::Error::other(e),
                })??;
            if let Some((slot, lock)) = got {
                if logged {
                    debug!(
                        pod = what,
                        slot,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "boot admitted after waiting"
                    );
                } else {
                    debug!(pod = what, slot, "boot admitted");
                }
                return Ok(BootPermit {
                    _lock: lock,
                    slot,
                    admitted_at: Instant::now(),
                });
            }
            if !logged {
                debug!(
                    pod = what,
                    width = self.width,
                    "every boot slot is taken; waiting for admission"
                );
                logged = true;
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Tries each slot once without blocking; the first one free is taken.
fn try_any(dir: &Path, width: u32) -> Result<Option<(u32, Flock<File>)>, AdmissionError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AdmissionError::Io {
            op: "create the directory of",
            path: dir.to_owned(),
            source,
        })?;
    // Start at a slot that depends on the process, so that waiters do not
    // all contend for slot 0 first.
    let first = std::process::id() % width;
    for i in 0..width {
        let slot = (first + i) % width;
        let path = dir.join(format!("slot-{slot}"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| AdmissionError::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some((slot, lock))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {}
            Err((_, errno)) => {
                return Err(AdmissionError::Io {
                    op: "lock",
                    path,
                    source: errno.into(),
                })
            }
        }
    }
    Ok(None)
}

/// Why a boot ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootExpiry {
    /// The console showed nothing new for this long.
    Stalled(Duration),
    /// The pod's boot timeout passed, counted from admission.
    Ceiling(Duration),
}

impl std::fmt::Display for BootExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootExpiry::Stalled(d) => write!(
                f,
                "its console showed nothing new for {} s",
                d.as_secs_f64().round()
            ),
            BootExpiry::Ceiling(d) => write!(
                f,
                "it reached its boot timeout of {} s (counted from admission)",
                d.as_secs_f64().round()
            ),
        }
    }
}

/// The deadline of one boot: from admission, extended by console progress,
/// never past the ceiling.
#[derive(Debug)]
pub struct BootDeadline {
    admitted_at: Instant,
    stall: Duration,
    ceiling: Duration,
    last_progress: Instant,
    /// Console bytes seen so far.
    seen: u64,
    /// When the boot was last reported slow (at info).
    reported: Option<Instant>,
}

impl BootDeadline {
    /// A deadline counting from `admitted_at`.
    pub fn new(admitted_at: Instant, stall: Duration, ceiling: Duration) -> Self {
        BootDeadline {
            admitted_at,
            stall,
            ceiling,
            last_progress: admitted_at,
            seen: 0,
            reported: None,
        }
    }

    /// Notes that the console has shown `consumed` bytes in all (a count
    /// that only grows): new bytes are progress.
    pub fn observe(&mut self, consumed: u64, now: Instant) {
        if consumed > self.seen {
            self.seen = consumed;
            self.last_progress = now;
        }
    }

    /// When the boot is out of time at `now`, why.
    pub fn expired(&self, now: Instant) -> Option<BootExpiry> {
        if now.saturating_duration_since(self.admitted_at) >= self.ceiling {
            return Some(BootExpiry::Ceiling(self.ceiling));
        }
        if now.saturating_duration_since(self.last_progress) >= self.stall {
            return Some(BootExpiry::Stalled(self.stall));
        }
        None
    }

    /// How long since admission.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.admitted_at)
    }

    /// Logs, at info and at most once per stall period, a boot that has run
    /// longer than the stall period but is still making progress.
    pub fn report_slow(&mut self, pod: &str, now: Instant) {
        let elapsed = self.elapsed(now);
        if elapsed < self.stall {
            return;
        }
        if self
            .reported
            .is_some_and(|at| now.saturating_duration_since(at) < self.stall)
        {
            return;
        }
        self.reported = Some(now);
        info!(
            pod,
            elapsed_s = elapsed.as_secs(),
            console_bytes = self.seen,
            ceiling_s = self.ceiling.as_secs(),
            "boot is slow but its console is making progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slots_bound_boots_and_free_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let adm = BootAdmission::new(dir.path(), 2);
        let a = adm.admit("a").await.expect("a");
        let b = adm.admit("b").await.expect("b");
        assert_ne!(a.slot(), b.slot());
        let slots = dir.path().join("locks/boot");
        assert!(
            try_any(&slots, 2).expect("try").is_none(),
            "both slots are held"
        );
        let waiter = tokio::spawn({
            let adm = adm.clone();
            async move { adm.admit("c").await.map(|p| p.slot()) }
        });
        // The waiter keeps waiting while both are held.
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let freed = a.slot();
        drop(a);
        let got = waiter.await.expect("join").expect("c");
        assert_eq!(got, freed, "the freed slot is taken");
        drop(b);
    }

    /// A slot held by another process (locked with util-linux `flock`) is
    /// taken once that process is SIGKILLed: the kernel releases it.
    #[test]
    fn a_slot_held_by_a_killed_process_is_freed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = dir.path().join("locks/boot");
        std::fs::create_dir_all(&slots).expect("mkdir");
        let slot = slots.join("slot-0");
        std::fs::write(&slot, b"").expect("slot");
        // The shell opens the slot, flock(1) locks that open file, and the
        // shell becomes `sleep`, the only holder.
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 9<>\"$0\" && flock -x 9 && echo held && exec sleep 60")
            .arg(&slot)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
        assert_eq!(line.trim(), "held", "flock(1) is util-linux's");
        assert!(try_any(&slots, 1).expect("try").is_none(), "held by child");
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(
            try_any(&slots, 1).expect("try").is_some(),
            "released by the kernel"
        );
    }

    #[test]
    fn the_deadline_follows_progress_up_to_the_ceiling() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = BootDeadline::new(t0, s(30), s(120));
        assert_eq!(d.expired(t0 + s(29)), None);
        assert_eq!(d.expired(t0 + s(30)), Some(BootExpiry::Stalled(s(30))));
        d.observe(100, t0 + s(25));
        assert_eq!(d.expired(t0 + s(54)), None, "progress extends it");
        d.observe(100, t0 + s(50));
        assert_eq!(
            d.expired(t0 + s(55)),
            Some(BootExpiry::Stalled(s(30))),
            "the same count is no progress"
        );
        for t in (60..130).step_by(10) {
            d.observe(t, t0 + s(t));
        }
        assert_eq!(d.expired(t0 + s(119)), None);
        assert_eq!(d.expired(t0 + s(120)), Some(BootExpiry::Ceiling(s(120))));
    }
}
