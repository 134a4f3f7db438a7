//! Output connections parked for a process that has not started yet (protocol
//! version 3's direct streams).
//!
//! The host opens a connection per output stream and parks it
//! ([`vc_proto::StreamPark`]); `ExecDirect` then claims the process's parked
//! connections, and the spawner places their sockets on the child's fds 1 and
//! 2, so the process writes straight into the connection and the agent keeps
//! no copy. The table is bounded: at most [`MAX_PARKED_STREAMS`] entries at
//! once (per agent, so per pod), and an entry no exec claims within its
//! timeout (at most [`MAX_PARK_TIMEOUT_MS`]) is dropped, which closes the
//! connection.
//!
//! A park takes a slot ([`ParkedStreams::reserve`]) before the agent answers
//! `Ok`, and fills it with the socket after: a slot still being filled counts
//! against the bound, and an exec that names it finds it not parked.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use vc_proto::{ProcessRef, StreamKind, MAX_PARKED_STREAMS, MAX_PARK_TIMEOUT_MS};

use super::stdio::DirectOutput;
use super::Display;

/// Why a stream cannot be parked or claimed.
#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    /// Only stdout and stderr can be parked.
    #[error("only stdout and stderr can be handed to a process directly, not {0:?}")]
    NotOutput(StreamKind),
    /// This stream of this process is parked already.
    #[error("the {1:?} stream of {0} is already parked")]
    AlreadyParked(Display, StreamKind),
    /// The table is full.
    #[error("{0} streams are parked already, the most one agent keeps")]
    Full(usize),
    /// An exec named a stream that is not parked (never, expired, or a
    /// second exec of the same process).
    #[error("no parked {1:?} stream for {0} (none was parked, or it expired)")]
    NotParked(Display, StreamKind),
    /// An exec named a stream twice.
    #[error("the {0:?} stream is named twice")]
    Duplicate(StreamKind),
}

enum Slot {
    /// Taken by a park whose answer is being written.
    Reserved,
    /// The socket, and the number of the park (for its expiry).
    Parked { fd: OwnedFd, serial: u64 },
}

#[derive(Default)]
struct Table {
    slots: HashMap<(ProcessRef, StreamKind), Slot>,
    serial: u64,
}

/// Every parked stream of the agent.
#[derive(Default)]
pub struct ParkedStreams {
    table: Mutex<Table>,
}

impl std::fmt::Debug for ParkedStreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkedStreams")
            .field("slots", &self.len())
            .finish()
    }
}

/// A slot taken for one park; dropped unfilled, it is given back.
#[derive(Debug)]
pub struct Reservation {
    table: Weak<ParkedStreams>,
    key: Option<(ProcessRef, StreamKind)>,
}

impl ParkedStreams {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().expect("parked streams lock poisoned")
    }

    /// Slots taken (parked or being parked).
    pub fn len(&self) -> usize {
        self.table().slots.len()
    }

    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the slot of `stream` of `process`.
    pub fn reserve(
        self: &Arc<Self>,
        process: &ProcessRef,
        stream: StreamKind,
    ) -> Result<Reservation, ParkError> {
        if !matches!(stream, StreamKind::Stdout | StreamKind::Stderr) {
            return Err(ParkError::NotOutput(stream));
        }
        let mut table = self.table();
        let key = (process.clone(), stream);
        if table.slots.contains_key(&key) {
            return Err(ParkError::AlreadyParked(Display(process.clone()), stream));
        }
        if table.slots.len() >= MAX_PARKED_STREAMS {
            return Err(ParkError::Full(MAX_PARKED_STREAMS));
        }
        table.slots.insert(key.clone(), Slot::Reserved);
        Ok(Reservation {
            table: Arc::downgrade(self),
            key: Some(key),
        })
    }

    /// Takes the parked sockets of `streams` (stdout, stderr, each at most
    /// once) of `process` out of the table. When one is missing, every one
    /// named is dropped (closing it) and the error names the first missing.
    pub fn claim(
        &self,
        process: &ProcessRef,
        streams: &[StreamKind],
    ) -> Result<DirectOutput, ParkError> {
        let mut direct = DirectOutput::default();
        let mut missing = None;
        let mut table = self.table();
        for &stream in streams {
            let place = match stream {
                StreamKind::Stdout => &mut direct.stdout,
                StreamKind::Stderr => &mut direct.stderr,
                other => return Err(ParkError::NotOutput(other)),
            };
            if place.is_some() {
                return Err(ParkError::Duplicate(stream));
            }
            let key = (process.clone(), stream);
            match table.slots.remove(&key) {
                Some(Slot::Parked { fd, .. }) => *place = Some(fd),
                Some(Slot::Reserved) => {
                    // Still being parked: leave it to its park, which will
                    // find its slot and let it expire unclaimed.
                    table.slots.insert(key, Slot::Reserved);
                    missing.get_or_insert(stream);
                }
                None => {
                    missing.get_or_insert(stream);
                }
            }
        }
        match missing {
            Some(stream) => Err(ParkError::NotParked(Display(process.clone()), stream)),
            None => Ok(direct),
        }
    }

    /// Drops the entry `key` if it is still park number `serial`.
    fn expire(&self, key: &(ProcessRef, StreamKind), serial: u64) {
        let mut table = self.table();
        if matches!(table.slots.get(key), Some(Slot::Parked { serial: s, .. }) if *s == serial) {
            table.slots.remove(key);
            tracing::info!(
                container_id = %key.0.container_id,
                exec_id = ?key.0.exec_id,
                stream = ?key.1,
                "parked stream expired unclaimed; closed"
            );
        }
    }
}

impl Reservation {
    /// Parks `fd` in the slot until an exec claims it or `timeout` (cut to
    /// [`MAX_PARK_TIMEOUT_MS`]) passes. Must run on the agent's runtime (the
    /// expiry is a task).
    pub fn fill(mut self, fd: OwnedFd, timeout: Duration) {
        let (Some(key), Some(parked)) = (self.key.take(), self.table.upgrade()) else {
            return;
        };
        let serial = {
            let mut table = parked.table();
            table.serial += 1;
            let serial = table.serial;
            match table.slots.get_mut(&key) {
                Some(slot @ Slot::Reserved) => *slot = Slot::Parked { fd, serial },
                // The slot was taken away meanwhile (cannot happen while the
                // reservation lives); dropping `fd` closes the connection.
                _ => return,
            }
            serial
        };
        let timeout = timeout.min(Duration::from_millis(u64::from(MAX_PARK_TIMEOUT_MS)));
        let table = Arc::downgrade(&parked);
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(parked) = table.upgrade() {
                parked.expire(&key, serial);
            }
        });
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let (Some(key), Some(parked)) = (self.key.take(), self.table.upgrade()) {
            let mut table = parked.table();
            if matches!(table.slots.get(&key), Some(Slot::Reserved)) {
                table.slots.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(exec: &str) -> ProcessRef {
        ProcessRef {
            container_id: "c".into(),
            exec_id: Some(exec.into()),
        }
    }

    fn socket() -> OwnedFd {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        a.into()
    }

    #[tokio::test]
    async fn park_claim_once() {
        let parked = Arc::new(ParkedStreams::default());
        let p = process("e");
        for stream in [StreamKind::Stdout, StreamKind::Stderr] {
            parked
                .reserve(&p, stream)
                .expect("slot")
                .fill(socket(), Duration::from_secs(60));
        }
        assert!(matches!(
            parked.reserve(&p, StreamKind::Stdout),
            Err(ParkError::AlreadyParked(..))
        ));
        let direct = parked
            .claim(&p, &[StreamKind::Stdout, StreamKind::Stderr])
            .expect("claimed");
        assert!(direct.stdout.is_some() && direct.stderr.is_some());
        assert!(parked.is_empty());
        assert!(matches!(
            parked.claim(&p, &[StreamKind::Stdout]),
            Err(ParkError::NotParked(_, StreamKind::Stdout))
        ));
    }

    #[tokio::test]
    async fn a_missing_stream_drops_the_others() {
        let parked = Arc::new(ParkedStreams::default());
        let p = process("e");
        parked
            .reserve(&p, StreamKind::Stdout)
            .expect("slot")
            .fill(socket(), Duration::from_secs(60));
        assert!(matches!(
            parked.claim(&p, &[StreamKind::Stdout, StreamKind::Stderr]),
            Err(ParkError::NotParked(_, StreamKind::Stderr))
        ));
        assert!(parked.is_empty());
    }

    #[tokio::test]
    async fn only_output_streams_and_a_bounded_count() {
        let parked = Arc::new(ParkedStreams::default());
        assert!(matches!(
            parked.reserve(&process("e"), StreamKind::Stdin),
            Err(ParkError::NotOutput(StreamKind::Stdin))
        ));
        let mut held = Vec::new();
        for i in 0..MAX_PARKED_STREAMS {
            held.push(
                parked
                    .reserve(&process(&i.to_string()), StreamKind::Stdout)
                    .expect("room"),
            );
        }
        assert!(matches!(
            parked.reserve(&process("one more"), StreamKind::Stdout),
            Err(ParkError::Full(MAX_PARKED_STREAMS))
        ));
        // Reservations given back unfilled free their slots.
        drop(held);
        assert!(parked.is_empty());
    }

    #[tokio::test]
    async fn unclaimed_streams_expire() {
        let parked = Arc::new(ParkedStreams::default());
        let (long, short) = (process("long"), process("short"));
        parked
            .reserve(&long, StreamKind::Stdout)
            .expect("slot")
            .fill(socket(), Duration::from_secs(60));
        parked
            .reserve(&short, StreamKind::Stdout)
            .expect("slot")
            .fill(socket(), Duration::from_millis(50));
        // The short one goes by itself; the long one stays claimable.
        tokio::time::timeout(Duration::from_secs(10), async {
            while parked.len() > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the short park expired");
        assert!(matches!(
            parked.claim(&short, &[StreamKind::Stdout]),
            Err(ParkError::NotParked(..))
        ));
        assert!(parked.claim(&long, &[StreamKind::Stdout]).is_ok());
    }
}
