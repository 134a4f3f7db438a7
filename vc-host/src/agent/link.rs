//! The multiplexed control connection: the table of pending calls and the
//! three tasks that serve it.
//!
//! - The **writer** task owns the write half; calls hand it requests through an
//!   mpsc channel, so frames never interleave.
//! - The **reader** task owns the read half and routes each response by id to
//!   the oneshot of the waiting call. A response for an unknown id (a call that
//!   timed out or was dropped, or a confused guest) is logged and dropped.
//! - The optional **liveness** task polls the VM liveness probe while calls are
//!   pending.
//!
//! When the connection goes down (end of stream, I/O error, a malformed frame,
//! the probe reporting the VM dead), every pending call fails at once with the
//! same cause, and so does every later call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, warn};
use vc_proto::{FrameError, FrameKind, FrameReader, FrameWriter, Request, Response};

use super::error::{AgentClientError, LinkDown};
use super::options::VmAlive;
use crate::hypervisor::HelperWatch;

/// How long a broken connection waits for a watched helper's death to show
/// (see [`Shared::settle_cause`]).
const HELPER_SETTLE: Duration = Duration::from_millis(200);

/// What a pending call receives.
pub(crate) type Reply = Result<Response, AgentClientError>;

/// A request on its way to the writer task.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) id: u64,
    pub(crate) request: Request,
}

#[derive(Debug)]
struct Pending {
    request: &'static str,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<u64, Pending>,
    down: Option<LinkDown>,
    /// Callers other than calls that want the liveness probe polled
    /// (see [`Shared::hold`]).
    holds: usize,
}

/// State shared by the client handle and its tasks.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    down_tx: watch::Sender<bool>,
    vm_alive: Option<VmAlive>,
    helpers: Option<Arc<HelperWatch>>,
}

impl Shared {
    pub(crate) fn new(vm_alive: Option<VmAlive>, helpers: Option<Arc<HelperWatch>>) -> Self {
        Self {
            state: Mutex::new(State::default()),
            down_tx: watch::channel(false).0,
            vm_alive,
            helpers,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one did, the table is
        // still consistent (every change is a single map operation).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a call; fails at once when the connection is already down.
    pub(crate) fn register(
        &self,
        id: u64,
        request: &'static str,
    ) -> Result<oneshot::Receiver<Reply>, AgentClientError> {
        let mut state = self.lock();
        if let Some(cause) = &state.down {
            return Err(cause.for_request(request));
        }
        let (reply, rx) = oneshot::channel();
        state.pending.insert(id, Pending { request, reply });
        Ok(rx)
    }

    /// Removes a call that no longer waits (answered, timed out or dropped).
    pub(crate) fn forget(&self, id: u64) {
        self.lock().pending.remove(&id);
    }

    /// Completes one call; `false` when no call with that id is pending.
    fn complete(&self, id: u64, reply: impl FnOnce(&'static str) -> Reply) -> bool {
        let Some(pending) = self.lock().pending.remove(&id) else {
            return false;
        };
        // The caller may have given up in the meantime; nothing to do then.
        let _ = pending.reply.send(reply(pending.request));
        true
    }

    /// Marks the connection down and fails every pending call with `cause`.
    /// The first cause wins. Another cause becomes
    /// [`LinkDown::HelperDied`] when a watched helper is dead, or
    /// [`LinkDown::VmGone`] when the liveness probe says the VM is dead.
    pub(crate) fn fail_all(&self, cause: LinkDown) {
        let death = match &cause {
            LinkDown::HelperDied(_) => None,
            _ => self.helpers.as_ref().and_then(|w| w.check()),
        };
        let cause = match (death, &cause, &self.vm_alive) {
            (Some(death), _, _) => LinkDown::HelperDied(death),
            (None, LinkDown::VmGone | LinkDown::HelperDied(_), _) => cause,
            (None, _, Some(probe)) if !probe.is_alive() => LinkDown::VmGone,
            _ => cause,
        };
        let drained: Vec<Pending> = {
            let mut state = self.lock();
            if state.down.is_some() {
                return;
            }
            state.down = Some(cause.clone());
            state.pending.drain().map(|(_, p)| p).collect()
        };
        // A clean close with nobody waiting is the normal end (after a
        // shutdown request); anything else is worth a warning.
        if drained.is_empty() && matches!(cause, LinkDown::Closed | LinkDown::HelperDied(_)) {
            debug!("agent closed the connection");
        } else {
            warn!(cause = %cause, failed_calls = drained.len(), "agent connection down");
        }
        for pending in drained {
            let _ = pending.reply.send(Err(cause.for_request(pending.request)));
        }
        self.down_tx.send_replace(true);
    }

    /// The cause to report for a connection that broke: a helper that is
    /// dying closes its sockets a moment before its pidfd says it is dead,
    /// so a watched helper gets [`HELPER_SETTLE`] to show its death.
    async fn settle_cause(&self, cause: LinkDown) -> LinkDown {
        let Some(watch) = &self.helpers else {
            return cause;
        };
        match tokio::time::timeout(HELPER_SETTLE, watch.died()).await {
            Ok(death) => LinkDown::HelperDied(death),
            Err(_) => cause,
        }
    }

    /// Why the connection is down, if it is.
    pub(crate) fn down(&self) -> Option<LinkDown> {
        self.lock().down.clone()
    }

    /// The error a call gets when it finds the connection gone.
    pub(crate) fn down_error(&self, request: &'static str) -> AgentClientError {
        self.down().unwrap_or(LinkDown::Closed).for_request(request)
    }

    /// Whether anyone waits on the connection (a pending call or a hold).
    fn busy(&self) -> bool {
        let state = self.lock();
        !state.pending.is_empty() || state.holds > 0
    }

    /// Keeps the liveness probe polled until the guard is dropped, for callers
    /// that wait on something other than a call (such as process streams).
    pub(crate) fn hold(self: &Arc<Self>) -> Hold {
        self.lock().holds += 1;
        Hold(Arc::clone(self))
    }

    /// Resolves when the connection is down, with the cause.
    pub(crate) async fn wait_down(&self) -> LinkDown {
        let mut rx = self.down_tx.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we wait.
        let _ = rx.wait_for(|down| *down).await;
        self.down().unwrap_or(LinkDown::Closed)
    }
}

/// See [`Shared::hold`].
#[derive(Debug)]
pub(crate) struct Hold(Arc<Shared>);

impl Drop for Hold {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.holds = state.holds.saturating_sub(1);
    }
}

/// Writes requests in the order calls send them until the channel closes or
/// the connection goes down.
pub(crate) async fn write_loop<W>(
    mut writer: FrameWriter<W>,
    mut requests: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
) where
    W: AsyncWrite + Unpin,
{
    let mut down = shared.down_tx.subscribe();
    loop {
        let next = tokio::select! {
            _ = down.wait_for(|d| *d) => break,
            next = requests.recv() => next,
        };
        let Some(Outgoing { id, request }) = next else {
            break;
        };
        let written = tokio::select! {
            // A write blocked on a guest that stopped reading is abandoned
            // once the connection is declared down (for example by the probe).
            _ = down.wait_for(|d| *d) => break,
            written = writer.write_message(FrameKind::Request, id, &request) => written,
        };
        match written {
            Ok(()) => debug!(id, request = request.name(), "request sent"),
            // Encoding failed before anything was written: only this call fails.
            Err(e @ (FrameError::TooLargeToSend { .. } | FrameError::Undecodable { .. })) => {
                shared.complete(id, |request| {
                    Err(AgentClientError::Encode { request, source: e })
                });
            }
            Err(e) => {
                shared.fail_all(shared.settle_cause(LinkDown::Write(Arc::new(e))).await);
                break;
            }
        }
    }
    // Best effort: tell the agent no more requests come.
    let _ = writer.get_mut().shutdown().await;
}

/// Reads frames and routes responses until the connection ends or breaks.
pub(crate) async fn read_loop<R>(mut reader: FrameReader<R>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
{
    // A guest may send any number of stray frames; log the first few and then
    // a sample, so it cannot flood the host's log.
    let mut dropped = 0u64;
    let mut drop_frame = |kind: FrameKind, id: u64, why: &str| {
        dropped += 1;
        if dropped <= 16 || dropped % 1024 == 0 {
            warn!(?kind, id, dropped, "{why}, dropped");
        }
    };
    loop {
        let frame = match reader.read_frame().await {
            Ok(frame) => frame,
            Err(e) => {
                shared.fail_all(shared.settle_cause(LinkDown::from_read(e)).await);
                return;
            }
        };
        let id = frame.header.id;
        if frame.header.kind != FrameKind::Response {
            drop_frame(frame.header.kind, id, "unexpected frame from the agent");
            continue;
        }
        let routed = shared.complete(id, |request| {
            frame
                .decode::<Response>(FrameKind::Response)
                .map_err(|source| AgentClientError::BadResponse { request, source })
        });
        if !routed {
            drop_frame(
                FrameKind::Response,
                id,
                "response for an unknown request id",
            );
        }
    }
}

/// Waits on the pidfds of QEMU and its helpers; when one dies, takes the
/// connection down with [`LinkDown::HelperDied`], waking every pending call.
pub(crate) async fn helpers_loop(shared: Arc<Shared>, watch: Arc<HelperWatch>) {
    tokio::select! {
        _ = shared.wait_down() => {}
        death = watch.died() => shared.fail_all(LinkDown::HelperDied(death)),
    }
}

/// Polls the liveness probe while anyone waits on the connection; on a dead
/// VM, takes the connection down with [`LinkDown::VmGone`].
pub(crate) async fn liveness_loop(shared: Arc<Shared>, probe: VmAlive, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shared.wait_down() => return,
            _ = tick.tick() => {}
        }
        if shared.busy() && !probe.is_alive() {
            shared.fail_all(LinkDown::VmGone);
            return;
        }
    }
}
