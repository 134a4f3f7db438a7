//! The [`AgentClient`] handle: connecting, the handshake, and the generic call
//! with its timeout. Typed methods are in `methods.rs`, process streams in
//! `attach.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, debug_span, Instrument};
use vc_proto::{FrameReader, FrameWriter, Hello, Negotiated, Request, Response};

use super::dial::{AgentIo, Dialer, VsockDialer};
use super::error::{AgentClientError, LinkDown};
use super::link::{self, Outgoing, Shared};
use super::options::{helper_died, vm_gone, ConnectOptions};
use crate::vsock::{VsockAddr, VsockStream};

/// Requests queued for the writer task before callers wait for room.
const WRITE_QUEUE: usize = 64;

/// What the host announces in the handshake.
pub(crate) fn hello() -> Hello {
    Hello::ours(format!("vc-host {}", env!("CARGO_PKG_VERSION")))
}

/// A client of one agent: one control connection, requests multiplexed on it
/// by id. Cheap to clone; clones share the connection, which closes when the
/// last clone is dropped.
#[derive(Clone)]
pub struct AgentClient {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    requests: mpsc::Sender<Outgoing>,
    next_id: AtomicU64,
    negotiated: Negotiated,
    pub(crate) opts: ConnectOptions,
    pub(crate) dialer: Option<Arc<dyn Dialer>>,
    pub(crate) addr: Option<VsockAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("addr", &self.inner.addr)
            .field("protocol_version", &self.inner.negotiated.version)
            .field("agent", &self.inner.negotiated.peer.software)
            .field("down", &self.inner.shared.down())
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects to the agent at `addr`, port `opts.port`.
    ///
    /// While the guest boots the connection is refused; transient errors
    /// ([`VsockError::is_transient`](crate::vsock::VsockError::is_transient))
    /// are retried with a doubling backoff until `opts.deadline`. Then the
    /// version handshake runs, bounded by `opts.call_timeout`. With a liveness
    /// probe, a VM that dies meanwhile fails the connect with
    /// [`AgentClientError::VmGone`] within one probe interval.
    ///
    /// The client remembers `addr` to open process streams
    /// ([`attach`](Self::attach)).
    pub async fn connect(
        addr: &VsockAddr,
        opts: &ConnectOptions,
    ) -> Result<Self, AgentClientError> {
        let span = debug_span!("agent_connect", addr = %addr, port = opts.port);
        async move {
            let stream = tokio::select! {
                biased;
                death = helper_died(opts.helpers.as_ref()) => {
                    return Err(AgentClientError::HelperDied { during: "connect", death });
                }
                _ = vm_gone(opts.vm_alive.as_ref(), opts.liveness_interval) => {
                    return Err(AgentClientError::VmGone { during: "connect" });
                }
                stream = connect_with_backoff(addr, opts) => stream?,
            };
            let dialer = Arc::new(VsockDialer {
                addr: addr.clone(),
                port: opts.port,
            });
            Self::build(stream, opts, Some(dialer), Some(addr.clone())).await
        }
        .instrument(span)
        .await
    }

    /// Makes a client over an already open connection, with default options
    /// and no way to open process streams. Runs the handshake.
    pub async fn from_stream<S: AgentIo>(stream: S) -> Result<Self, AgentClientError> {
        Self::from_stream_with(stream, &ConnectOptions::default(), None).await
    }

    /// Makes a client over an already open connection, with the call timeout
    /// and liveness probe of `opts` and, when given, a dialer for process
    /// streams. Runs the handshake.
    pub async fn from_stream_with<S: AgentIo>(
        stream: S,
        opts: &ConnectOptions,
        dialer: Option<Arc<dyn Dialer>>,
    ) -> Result<Self, AgentClientError> {
        Self::build(stream, opts, dialer, None).await
    }

    async fn build<S: AgentIo>(
        stream: S,
        opts: &ConnectOptions,
        dialer: Option<Arc<dyn Dialer>>,
        addr: Option<VsockAddr>,
    ) -> Result<Self, AgentClientError> {
        let (read, write) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read);
        let mut writer = FrameWriter::new(write);
        let ours = hello();
        let handshake = vc_proto::handshake_client(&mut reader, &mut writer, &ours);
        let negotiated = tokio::select! {
            biased;
            death = helper_died(opts.helpers.as_ref()) => {
                return Err(AgentClientError::HelperDied { during: "handshake", death });
            }
            _ = vm_gone(opts.vm_alive.as_ref(), opts.liveness_interval) => {
                return Err(AgentClientError::VmGone { during: "handshake" });
            }
            done = tokio::time::timeout(opts.call_timeout, handshake) => done
                .map_err(|_| AgentClientError::Timeout {
                    request: "handshake",
                    after: opts.call_timeout,
                })?
                .map_err(AgentClientError::Handshake)?,
        };
        debug!(
            version = negotiated.version,
            agent = %negotiated.peer.software,
            "handshake done"
        );

        let shared = Arc::new(Shared::new(opts.vm_alive.clone(), opts.helpers.clone()));
        let (requests, queue) = mpsc::channel(WRITE_QUEUE);
        let mut tasks = vec![
            tokio::spawn(link::write_loop(writer, queue, Arc::clone(&shared))),
            tokio::spawn(link::read_loop(reader, Arc::clone(&shared))),
        ];
        if let Some(watch) = opts.helpers.clone() {
            tasks.push(tokio::spawn(link::helpers_loop(Arc::clone(&shared), watch)));
        }
        if let Some(probe) = opts.vm_alive.clone() {
            tasks.push(tokio::spawn(link::liveness_loop(
                Arc::clone(&shared),
                probe,
                opts.liveness_interval,
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                shared,
                requests,
                next_id: AtomicU64::new(1),
                negotiated,
                opts: opts.clone(),
                dialer,
                addr,
                tasks,
            }),
        })
    }

    /// The protocol version negotiated with the agent.
    pub fn protocol_version(&self) -> u16 {
        self.inner.negotiated.version
    }

    /// What the agent announced in the handshake (its software and versions).
    pub fn agent_hello(&self) -> &Hello {
        &self.inner.negotiated.peer
    }

    /// The address the client connected to, when made by [`connect`](Self::connect).
    pub fn addr(&self) -> Option<&VsockAddr> {
        self.inner.addr.as_ref()
    }

    /// Why the control connection is down, or `None` while it is up.
    pub fn link_down(&self) -> Option<LinkDown> {
        self.inner.shared.down()
    }

    /// Resolves when the control connection goes down, with the cause. While
    /// this is awaited the liveness probe is polled, so it also reports a
    /// dead VM; useful to bound reads of process streams.
    pub async fn closed(&self) -> LinkDown {
        let _hold = self.inner.shared.hold();
        self.inner.shared.wait_down().await
    }

    /// The timeout the typed methods use for `request`: none for `Wait` and
    /// `NextEvent`, the call timeout plus the grace period for
    /// `StopContainer`, the call timeout otherwise.
    pub fn timeout_for(&self, request: &Request) -> Option<Duration> {
        let base = self.inner.opts.call_timeout;
        match request {
            Request::Wait { .. } | Request::NextEvent => None,
            Request::StopContainer { grace_ms, .. } => {
                Some(base.saturating_add(Duration::from_millis(*grace_ms)))
            }
            _ => Some(base),
        }
    }

    /// Sends `request` and returns the agent's response, with the timeout of
    /// [`timeout_for`](Self::timeout_for). A [`Response::Error`] becomes
    /// [`AgentClientError::Agent`].
    pub async fn call(&self, request: Request) -> Result<Response, AgentClientError> {
        let timeout = self.timeout_for(&request);
        self.call_with_timeout(request, timeout).await
    }

    /// Like [`call`](Self::call) with an explicit timeout (`None`: wait until
    /// the answer or the connection's end).
    pub async fn call_with_timeout(
        &self,
        request: Request,
        timeout: Option<Duration>,
    ) -> Result<Response, AgentClientError> {
        let name = request.name();
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let span = debug_span!("agent_call", request = name, id);
        async move {
            let started = Instant::now();
            let shared = &self.inner.shared;
            let answer = shared.register(id, name)?;
            // Removes the table entry on every way out: answer, timeout, or the
            // caller dropping this future.
            let _forget = Forget { shared, id };
            let exchange = async {
                self.inner
                    .requests
                    .send(Outgoing { id, request })
                    .await
                    .map_err(|_| shared.down_error(name))?;
                answer
                    .await
                    .unwrap_or_else(|_| Err(shared.down_error(name)))
            };
            let response = match timeout {
                Some(after) => tokio::time::timeout(after, exchange).await.map_err(|_| {
                    AgentClientError::Timeout {
                        request: name,
                        after,
                    }
                })??,
                None => exchange.await?,
            };
            debug!(elapsed = ?started.elapsed(), "answered");
            match response {
                Response::Error(source) => Err(AgentClientError::Agent {
                    request: name,
                    source,
                }),
                response => Ok(response),
            }
        }
        .instrument(span)
        .await
    }
}

struct Forget<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// Connects, retrying transient errors with backoff until the deadline.
async fn connect_with_backoff(
    addr: &VsockAddr,
    opts: &ConnectOptions,
) -> Result<VsockStream, AgentClientError> {
    let deadline = Instant::now() + opts.deadline;
    let mut backoff = opts.initial_backoff;
    let mut attempts = 0u32;
    let mut last = None;
    let expired = |attempts, last| AgentClientError::ConnectDeadline {
        addr: addr.clone(),
        port: opts.port,
        after: opts.deadline,
        attempts,
        last,
    };
    loop {
        attempts += 1;
        let attempt_end = (Instant::now() + opts.attempt_timeout).min(deadline);
        let attempt = tokio::time::timeout_at(attempt_end, addr.connect(opts.port)).await;
        match attempt {
            Ok(Ok(stream)) => {
                debug!(attempts, "connected");
                return Ok(stream);
            }
            Ok(Err(e)) if e.is_transient() => {
                debug!(attempts, error = %e, "agent not reachable yet");
                last = Some(e);
            }
            Ok(Err(e)) => return Err(AgentClientError::Connect(e)),
            Err(_) if attempt_end >= deadline => return Err(expired(attempts, last)),
            // Unanswered: drop it and ask again.
            Err(_) => debug!(attempts, "connection attempt unanswered; retrying"),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(expired(attempts, last));
        }
        // The last attempt is made at the deadline.
        tokio::time::sleep_until((now + backoff).min(deadline)).await;
        backoff = backoff.saturating_mul(2).min(opts.max_backoff);
    }
}
