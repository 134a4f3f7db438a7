//! The call gate of one pod: `flock(2)` on `<root>/pods/<pod>/calls.lock`,
//! which keeps a pause from freezing the VM under a short agent call.
//!
//! Some verbs check the pod under its lock and then release the lock before
//! they talk to the agent (an exec, a signal, stats), so that a long call does
//! not hold up every other verb. A pause that came in between would freeze
//! the VM under them, and their connect or request would wait for a resume
//! that may never come in time. So such a verb takes a shared [`CallLease`]
//! while it still holds the pod's lock, and keeps it until its call is
//! answered; a pause takes the gate exclusively ([`PodDir::quiesce_calls`])
//! before it freezes the VM, which waits for the calls in flight. No lease is
//! taken on a paused pod (the verbs refuse it under the lock), and none while
//! a pause waits (it holds the pod's lock), so a pause never starves.
//!
//! Long waits (a process's exit, the event stream, streamed output) take no
//! lease: a pause only delays them.

use std::path::Path;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::{PodDir, StoreError};
use crate::beneath::Dir;

/// The gate's file name in the pod's directory.
const GATE: &str = "calls.lock";

/// A shared hold on a pod's call gate: while one exists the pod is not
/// paused. Dropped when the call is answered.
#[derive(Debug)]
pub struct CallLease {
    _lock: Flock<std::fs::File>,
}

/// The exclusive hold of a pause: no short call is in flight while it exists.
#[derive(Debug)]
pub struct Quiesced {
    _lock: Flock<std::fs::File>,
}

impl PodDir {
    fn gate(&self) -> Result<std::fs::File, StoreError> {
        let dir = Dir::open(&self.path)?;
        let fd = dir.open_at(
            Path::new(GATE),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(super::RECORD_MODE),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// Takes a shared lease on the call gate. The caller holds the pod's
    /// lock, so no pause is under way and this does not wait.
    pub async fn call_lease(&self) -> Result<CallLease, StoreError> {
        let file = self.gate()?;
        let path = self.path.join(GATE);
        crate::blocking::run(move || {
            Flock::lock(file, FlockArg::LockShared)
                .map(|lock| CallLease { _lock: lock })
                .map_err(|(_, errno)| StoreError::io("lock", &path, errno.into()))
        })
        .await
    }

    /// Waits up to `deadline` until no lease is held, and returns the
    /// exclusive hold; `None` when calls were still in flight at the
    /// deadline (each call is bounded by its own timeout, so the caller may
    /// go on: those calls then fail with theirs). The caller holds the pod's
    /// lock, so no new lease can be taken meanwhile.
    pub async fn quiesce_calls(&self, deadline: Duration) -> Result<Option<Quiesced>, StoreError> {
        let file = self.gate()?;
        let path = self.path.join(GATE);
        // A blocking flock, not a polling loop: if the deadline passes, the
        // thread gets the lock once the last lease is gone and drops it.
        let wait = crate::blocking::run(move || {
            Flock::lock(file, FlockArg::LockExclusive)
                .map(|lock| Quiesced { _lock: lock })
                .map_err(|(_, errno)| StoreError::io("lock", &path, errno.into()))
        });
        match tokio::time::timeout(deadline, wait).await {
            Ok(held) => held.map(Some),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::PodDir;
    use crate::id::PodId;

    fn pod_dir(tmp: &tempfile::TempDir) -> PodDir {
        PodDir {
            id: PodId::new("p").expect("valid id"),
            path: tmp.path().to_owned(),
        }
    }

    #[tokio::test]
    async fn a_pause_waits_for_the_calls_in_flight_and_no_longer() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = pod_dir(&tmp);
        let first = dir.call_lease().await.expect("lease");
        let second = dir.call_lease().await.expect("leases are shared");
        // Held: the pause gives up at its deadline.
        let waited = dir
            .quiesce_calls(Duration::from_millis(200))
            .await
            .expect("gate");
        assert!(waited.is_none(), "quiesced under two leases");
        drop(first);
        let still = dir
            .quiesce_calls(Duration::from_millis(200))
            .await
            .expect("gate");
        assert!(still.is_none(), "quiesced under one lease");
        // The last lease ends while the pause waits: it goes on at once.
        let pause = tokio::spawn({
            let dir = dir.clone();
            async move { dir.quiesce_calls(Duration::from_secs(30)).await }
        });
        drop(second);
        let held = pause.await.expect("pause task").expect("gate");
        assert!(held.is_some(), "no lease is left");
        // And while the pause holds the gate, a lease waits for it.
        let lease = tokio::time::timeout(Duration::from_millis(200), dir.call_lease()).await;
        assert!(lease.is_err(), "a lease was taken during a pause");
        drop(held);
        let lease = tokio::time::timeout(Duration::from_secs(30), dir.call_lease()).await;
        assert!(matches!(lease, Ok(Ok(_))), "no lease after the pause");
    }
}
