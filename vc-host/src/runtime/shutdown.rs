//! Stopping a pod's VM with one deadline per operation.
//!
//! Stop asks the agent to stop each container and power the VM off, then
//! stops QEMU and the helpers. The agent is asked through an [`AgentGate`]:
//! after its first timeout (or once the connection is gone) the operation
//! treats the agent as unresponsive and asks it nothing more, so a stalled
//! guest costs one timeout, not one per call. A broken pod (QEMU or a helper
//! dead, see `supervise`) skips the agent altogether. Either way QEMU gets a
//! short `quit` before SIGKILL: a VM that did not answer its agent is not
//! waited for twice.

use std::future::Future;
use std::time::Duration;

use tracing::{debug, warn};

use super::pod::{connect_agent_with, LockedPod};
use super::record::now;
use super::{Runtime, DEFAULT_STOP_GRACE, SHUTDOWN_GRACE};
use crate::agent::{AgentClientError, StreamError};
use crate::hypervisor::{Vm, VmStatus};
use crate::state::State;

/// How long stop waits for the agent of a running pod to accept a
/// connection (it answers in milliseconds when healthy, a few seconds on a
/// loaded host).
const STOP_CONNECT_DEADLINE: Duration = Duration::from_secs(5);

/// The timeout of each agent call made by stop, on top of a container's
/// grace period for `StopContainer`.
const STOP_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long QEMU gets to answer `quit` once its agent proved unresponsive or
/// the pod is broken, before SIGKILL.
const QUIT_WITHOUT_AGENT: Duration = Duration::from_secs(1);

/// The agent's calls within one operation: after the first timeout, no more.
#[derive(Debug, Default)]
pub(super) struct AgentGate {
    unresponsive: Option<String>,
}

impl AgentGate {
    /// True once a call timed out or found the agent gone.
    pub fn unresponsive(&self) -> bool {
        self.unresponsive.is_some()
    }

    /// Runs `call` unless the agent already proved unresponsive. `None` when
    /// skipped or failed (the failure is logged).
    pub async fn run<T>(
        &mut self,
        what: &'static str,
        call: impl Future<Output = Result<T, AgentClientError>>,
    ) -> Option<T> {
        if let Some(why) = &self.unresponsive {
            debug!(call = what, "skipped: the agent is unresponsive ({why})");
            return None;
        }
        match call.await {
            Ok(value) => Some(value),
            Err(e) if gives_up(&e) => {
                warn!(call = what, error = %e, "the agent is unresponsive; this operation no longer waits on it");
                self.unresponsive = Some(e.to_string());
                None
            }
            Err(e) => {
                warn!(call = what, error = %e, "agent call failed");
                None
            }
        }
    }
}

/// Errors after which asking the agent again would only wait again: a
/// timeout, or a connection or VM that is gone.
fn gives_up(e: &AgentClientError) -> bool {
    e.agent_gone()
        || matches!(
            e,
            AgentClientError::Timeout { .. }
                | AgentClientError::ConnectDeadline { .. }
                | AgentClientError::Stream {
                    source: StreamError::Timeout(_),
                    ..
                }
        )
}

impl Runtime {
    /// Stops the VM's processes (agent first unless the pod is broken or the
    /// agent stalls, then the hypervisor), marks running containers stopped
    /// and undoes the binds. Never fails.
    pub(super) async fn shutdown_vm_processes(&self, pod: &mut LockedPod) {
        let Some(record) = pod.record.vm.clone() else {
            pod.unbind_all_logged().await;
            return;
        };
        let vm = match Vm::from_record(record) {
            Ok(vm) => vm,
            Err(e) => {
                warn!(error = %e, "unusable VM record; nothing to stop");
                pod.unbind_all_logged().await;
                pod.record.vm = None;
                return;
            }
        };
        let broken = pod.record.state == State::Broken;
        let mut gate = AgentGate::default();
        if !broken && vm.is_running() {
            self.stop_through_agent(pod, &vm, &mut gate).await;
        }
        let quit = if broken || gate.unresponsive() {
            QUIT_WITHOUT_AGENT
        } else {
            SHUTDOWN_GRACE
        };
        if let Err(e) = vm.stop(quit).await {
            warn!(error = %e, "hypervisor cleanup reported an error");
        }
        for c in pod.record.containers.values_mut() {
            if matches!(c.state, State::Running | State::Paused) {
                c.state = State::Stopped;
                c.exit_code.get_or_insert(vc_proto::EXIT_CODE_VM_GONE);
                c.finished_at.get_or_insert_with(now);
            }
        }
        pod.unbind_all_logged().await;
        pod.record.vm = None;
    }

    /// Stops the containers through the agent and asks it to power off.
    async fn stop_through_agent(&self, pod: &mut LockedPod, vm: &Vm, gate: &mut AgentGate) {
        let connect = connect_agent_with(vm, STOP_CONNECT_DEADLINE, STOP_CALL_TIMEOUT);
        let Some(agent) = gate.run("connect", connect).await else {
            return;
        };
        if matches!(vm.status().await, Ok(VmStatus::Paused)) {
            let _ = vm.resume().await;
        }
        let grace = DEFAULT_STOP_GRACE.min(SHUTDOWN_GRACE);
        for c in pod.record.containers.values_mut() {
            if matches!(c.state, State::Running | State::Paused) {
                let code = gate
                    .run(
                        "stop container",
                        agent.stop_container(c.config.id.as_str(), grace),
                    )
                    .await
                    .unwrap_or(vc_proto::EXIT_CODE_VM_GONE);
                c.exit_code = Some(code);
                c.finished_at = Some(now());
            }
        }
        let acknowledged = gate.run("shutdown", agent.shutdown()).await.is_some();
        crate::fault::point("stop.agent-shutdown");
        if acknowledged {
            let _ = vm.wait_exit(SHUTDOWN_GRACE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn after_the_first_timeout_nothing_is_asked() {
        let mut gate = AgentGate::default();
        let ok = gate.run("a", async { Ok::<_, AgentClientError>(1) }).await;
        assert_eq!(ok, Some(1));
        let refused = gate
            .run("b", async { Err::<i32, _>(AgentClientError::NoDialer) })
            .await;
        assert_eq!(refused, None);
        assert!(!gate.unresponsive(), "an answered error is not a stall");
        let timed_out = gate
            .run("c", async {
                Err::<i32, _>(AgentClientError::Timeout {
                    request: "c",
                    after: Duration::from_secs(3),
                })
            })
            .await;
        assert_eq!(timed_out, None);
        assert!(gate.unresponsive());
        let mut asked = false;
        let skipped = gate
            .run("d", async {
                asked = true;
                Ok::<_, AgentClientError>(4)
            })
            .await;
        assert_eq!(skipped, None);
        assert!(!asked, "no call after the first timeout");
    }
}
