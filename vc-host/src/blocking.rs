//! What runs where: blocking work off the async workers.
//!
//! The library's verbs are `async` and run on whatever Tokio runtime the
//! embedder gives them: often a multi-threaded one with a worker per core,
//! sometimes a `current_thread` runtime (a CLI, a test), where one thread
//! serves every task. A system call that can wait (an `fsync`, a `flock`
//! without `LOCK_NB`, a mount or unmount, an `rmdir` retried while a cgroup
//! drains, a `fork`+`exec`, a sleep) stalls every task of that worker while
//! it waits: agent connections miss their deadlines, supervision stops
//! noticing deaths. So:
//!
//! - **Blocking work goes through [`run`]**, which runs a closure on Tokio's
//!   blocking pool and waits for it without holding a worker: the store's
//!   fsync'd records and its lock, the share's mounts and unmounts, process
//!   spawning, exit-status reaping that waits, file cleanup.
//! - **Waiting is async**: polling loops sleep with `tokio::time::sleep`,
//!   never `std::thread::sleep`, and wait on pidfds where there is one.
//! - **Namespace work has its own thread**: `setns(2)` changes only the
//!   calling thread, so the network code enters a pod's namespace on a thread
//!   it creates and ends (`network::netns`), never on a pooled one.
//! - **Sync code stays sync** when only sync code calls it (drop guards,
//!   tests, the `virtc` argument checks); a drop guard that must clean up
//!   from inside a runtime hands its blocking part to [`detach`].
//!
//! A `flock` is held by an open file description, not by a thread, so a lock
//! taken on the blocking pool may be held across awaits and released on any
//! thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Runs `f` on the blocking thread pool of the current Tokio runtime and
/// returns its result, without occupying an async worker meanwhile. Outside
/// a runtime, `f` runs on the calling thread. The caller's tracing span
/// covers `f`. A panic in `f` resumes in the caller, as if `f` had been
/// called directly.
pub(crate) async fn run<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return span.in_scope(f);
    };
    // The closure is shared with the pool so that, should the runtime shut
    // down before the pool starts it, it can still run here.
    let slot = Arc::new(Mutex::new(Some(f)));
    let pooled = Arc::clone(&slot);
    let pooled_span = span.clone();
    let joined = handle
        .spawn_blocking(move || {
            let f = take(&pooled)?;
            Some(pooled_span.in_scope(f))
        })
        .await;
    match joined {
        Ok(Some(value)) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled before it started (the runtime is shutting down): the
        // closure is still in its slot.
        Ok(None) | Err(_) => match take(&slot) {
            Some(f) => span.in_scope(f),
            // The pool took the closure and either returned its value or
            // panicked (both handled above): nothing is left to run, and
            // no third party can take it.
            None => unreachable!("a blocking closure both ran and did not"),
        },
    }
}

/// Starts `f` on the blocking pool without waiting for it: for drop guards
/// that must clean up (kill, remove) from inside a runtime and cannot await.
/// Outside a runtime, `f` runs on the calling thread before this returns.
pub(crate) fn detach<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    let span = tracing::Span::current();
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(move || span.in_scope(f));
        }
        Err(_) => span.in_scope(f),
    }
}

fn take<F>(slot: &Mutex<Option<F>>) -> Option<F> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A measuring aid for tests: a task that ticks every 10 ms on the runtime
/// it is started on and records the longest time between two of its ticks,
/// that is, how long that runtime kept it from running. On a
/// `current_thread` runtime, any blocking call made by another task shows
/// up as a gap as long as the call.
#[derive(Debug)]
pub struct Ticker {
    longest_us: Arc<AtomicU64>,
    ticks: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Ticker {
    /// Starts ticking on the current runtime.
    pub fn start() -> Self {
        let longest_us = Arc::new(AtomicU64::new(0));
        let (count, ticks) = tokio::sync::watch::channel(0u64);
        let longest = Arc::clone(&longest_us);
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(10));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every.tick().await;
            let mut last = Instant::now();
            loop {
                every.tick().await;
                let now = Instant::now();
                let gap = u64::try_from(now.duration_since(last).as_micros()).unwrap_or(u64::MAX);
                longest.fetch_max(gap, Ordering::Relaxed);
                count.send_modify(|n| *n += 1);
                last = now;
            }
        });
        Self {
            longest_us,
            ticks,
            task,
        }
    }

    /// Ticks so far.
    pub fn ticks(&self) -> u64 {
        *self.ticks.borrow()
    }

    /// Waits until it has ticked `n` more times.
    pub async fn wait_ticks(&self, n: u64) {
        let until = self.ticks() + n;
        let mut ticks = self.ticks.clone();
        // The sender lives as long as the task, which only `stop` ends.
        let _ = ticks.wait_for(|&t| t >= until).await;
    }

    /// The longest gap between two ticks so far; [`Self::reset`] starts over.
    pub fn longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.load(Ordering::Relaxed))
    }

    /// Forgets the gaps measured so far.
    pub fn reset(&self) {
        self.longest_us.store(0, Ordering::Relaxed);
    }

    /// Stops ticking and returns the longest gap.
    pub fn stop(self) -> Duration {
        self.task.abort();
        self.longest()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Ticker;

    /// On a runtime with a single thread, a closure that blocks until
    /// another task of that runtime has run (ticked 20 times, then sent it
    /// word) finishes: it runs on the blocking pool. Run on the runtime's
    /// thread it would wait out its 10 s and report that nobody answered.
    #[tokio::test(flavor = "current_thread")]
    async fn the_runtime_thread_keeps_serving_while_a_closure_blocks() {
        let ticker = std::sync::Arc::new(Ticker::start());
        let (tx, rx) = std::sync::mpsc::channel();
        let waker = std::sync::Arc::clone(&ticker);
        let other_task = tokio::spawn(async move {
            waker.wait_ticks(20).await;
            tx.send(()).expect("the closure waits");
        });
        let worker = std::thread::current().id();
        let (answered, ran_on) = super::run(move || {
            let answered = rx.recv_timeout(Duration::from_secs(10)).is_ok();
            (answered, std::thread::current().id())
        })
        .await;
        other_task.await.expect("the other task");
        assert!(
            answered,
            "the other task never ran while the closure blocked"
        );
        assert_ne!(ran_on, worker, "ran on the runtime's thread");
        let longest = ticker.longest();
        assert!(longest < Duration::from_millis(500), "{longest:?}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_resumes_in_the_caller() {
        let caught = tokio::spawn(super::run(|| -> u8 { panic!("boom") }))
            .await
            .expect_err("the panic reaches the caller");
        assert!(caught.is_panic());
    }

    #[test]
    fn outside_a_runtime_it_runs_in_place() {
        let here = std::thread::current().id();
        let ran_on = block_on_here(super::run(move || std::thread::current().id()));
        assert_eq!(ran_on, here);
        let (tx, rx) = std::sync::mpsc::channel();
        super::detach(move || tx.send(std::thread::current().id()).expect("send"));
        assert_eq!(rx.try_recv().expect("ran before detach returned"), here);
    }

    /// Polls a future to completion on this thread without a Tokio runtime.
    fn block_on_here<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
