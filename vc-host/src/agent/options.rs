//! How an agent client connects and how long it waits: deadlines, backoff,
//! call timeouts and the VM liveness probe.

use std::sync::Arc;
use std::time::Duration;

use crate::hypervisor::{HelperDeath, HelperWatch};

/// A check that the VM is still alive, such as "the QEMU process has not
/// exited". It is called from async tasks and must return at once (no
/// blocking I/O): `kill(pid, 0)` or a `try_wait` is fine.
///
/// The client polls it while connecting and while any call is pending (every
/// [`ConnectOptions::liveness_interval`]); once it returns `false` the
/// connection is treated as gone and every pending call fails with
/// [`AgentClientError::VmGone`](super::AgentClientError::VmGone). This is how a
/// killed VM is noticed even when a hybrid vsock daemon keeps the socket open.
#[derive(Clone)]
pub struct VmAlive(Arc<dyn Fn() -> bool + Send + Sync>);

impl VmAlive {
    /// Wraps a probe.
    pub fn new(probe: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(probe))
    }

    /// Runs the probe.
    pub fn is_alive(&self) -> bool {
        (self.0)()
    }

    /// Resolves when the probe first returns `false`, checking every `every`.
    pub(crate) async fn gone(&self, every: Duration) {
        // `interval` panics on a zero period.
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.is_alive() {
                return;
            }
        }
    }
}

impl From<Arc<dyn Fn() -> bool + Send + Sync>> for VmAlive {
    fn from(probe: Arc<dyn Fn() -> bool + Send + Sync>) -> Self {
        Self(probe)
    }
}

impl std::fmt::Debug for VmAlive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VmAlive(..)")
    }
}

/// Resolves when a watched helper dies; never without a watch.
pub(crate) async fn helper_died(watch: Option<&Arc<HelperWatch>>) -> HelperDeath {
    match watch {
        Some(watch) => watch.died().await,
        None => std::future::pending().await,
    }
}

/// Resolves when `probe` (if any) reports the VM dead; never without a probe.
pub(crate) async fn vm_gone(probe: Option<&VmAlive>, every: Duration) {
    match probe {
        Some(probe) => probe.gone(every).await,
        None => std::future::pending().await,
    }
}

/// Settings of [`AgentClient::connect`](super::AgentClient::connect) and of
/// the client it returns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Guest port of the agent.
    pub port: u32,
    /// How long to keep retrying while the guest boots (transient errors only).
    pub deadline: Duration,
    /// First pause between connection attempts; doubled after each attempt.
    pub initial_backoff: Duration,
    /// Longest pause between connection attempts.
    pub max_backoff: Duration,
    /// Longest wait for one connection attempt. A hybrid vsock daemon can keep
    /// a `CONNECT` sent before the guest's vsock driver was ready unanswered
    /// for a long time; asking again reaches the guest once it listens. An
    /// abandoned hybrid attempt's socket stays open until the daemon answers
    /// it (see [`crate::vsock`]: vhost-device-vsock 0.3 stops serving for
    /// good when an answer meets a closed socket).
    pub attempt_timeout: Duration,
    /// Timeout of each call, except `wait` and `next_event`, which have none.
    /// Also bounds the handshake and each stream attach.
    pub call_timeout: Duration,
    /// Optional VM liveness probe.
    pub vm_alive: Option<VmAlive>,
    /// How often the liveness probe is polled.
    pub liveness_interval: Duration,
    /// Pidfds on QEMU and its helpers: when one dies, connecting and every
    /// pending and later call fail at once with
    /// [`AgentClientError::HelperDied`](super::AgentClientError::HelperDied).
    pub helpers: Option<Arc<HelperWatch>>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            port: vc_proto::AGENT_VSOCK_PORT,
            // A guest under TCG answers in 2 to 3 s; leave room for a loaded machine.
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            attempt_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(30),
            vm_alive: None,
            liveness_interval: Duration::from_millis(200),
            helpers: None,
        }
    }
}

impl ConnectOptions {
    /// Sets the guest port.
    pub fn port(mut self, port: u32) -> Self {
        self.port = port;
        self
    }

    /// Sets the connect deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the backoff between connection attempts.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Sets the longest wait for one connection attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Sets the per-call timeout.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets the VM liveness probe.
    pub fn vm_alive(mut self, probe: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        self.vm_alive = Some(VmAlive::new(probe));
        self
    }

    /// Sets the watch on QEMU and its helpers.
    pub fn helpers(mut self, watch: Arc<HelperWatch>) -> Self {
        self.helpers = Some(watch);
        self
    }

    /// Sets how often the liveness probe is polled.
    pub fn liveness_interval(mut self, every: Duration) -> Self {
        self.liveness_interval = every;
        self
    }
}
