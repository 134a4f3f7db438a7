//! More processes in a task's container (Exec, then Start with the exec
//! id), and stdio control for any process (ResizePty, CloseIO).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use containerd_shim::api::{CloseIORequest, ExecProcessRequest, ResizePtyRequest};
use containerd_shim::protos::events::task::TaskExecAdded;
use tracing::info;
use vc_host::runtime::{ExecEnv, Process};
use vc_proto::ProcessRef;

use super::io::Fifos;
use super::state::{Phase, Proc, Stdio, Task};
use super::task::{display_id, process};
use super::{bounded, call, ServiceError, Shared};
use crate::bundle;

/// The longest part of a containerd exec id kept in the agent's exec id.
const EXEC_PREFIX: usize = 40;

/// An exec id for the agent: the containerd exec id (shortened) and a
/// counter, unique for the shim's life, so that reusing a containerd exec id
/// never meets an old process the agent still remembers.
fn agent_exec_id(exec_id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix: String = exec_id.chars().take(EXEC_PREFIX).collect();
    format!("{prefix}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

impl Shared {
    pub(super) async fn exec(&self, req: ExecProcessRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(ServiceError::Invalid("an exec needs an exec id".into()));
        }
        if task.init.phase() != Phase::Running {
            return Err(ServiceError::State(format!(
                "task {} is not running; exec needs it running",
                req.id
            )));
        }
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| ServiceError::Invalid("the exec has no process spec".into()))?;
        let mut config = bundle::exec_process(&spec.value)?;
        config.terminal = req.terminal;
        config.stdin = !req.stdin.is_empty();
        if config.args.is_empty() {
            return Err(ServiceError::Invalid(format!(
                "exec {} has no arguments: args[0] names the program",
                req.exec_id
            )));
        }
        let proc = Proc::new(
            req.exec_id.clone(),
            ProcessRef {
                container_id: task.container.to_string(),
                exec_id: Some(agent_exec_id(&req.exec_id)),
            },
            Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            Some(config),
        );
        if !task.add_exec(proc) {
            return Err(ServiceError::Exists(format!(
                "exec {} of task {}",
                req.exec_id, req.id
            )));
        }
        info!(container_id = %req.id, exec_id = %req.exec_id, "exec added");
        self.events
            .publish(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..TaskExecAdded::default()
            })
            .await;
        Ok(())
    }

    /// Starts an added exec: the container's process settings with the
    /// exec's own on top.
    pub(super) async fn start_exec(
        self: &Arc<Self>,
        task: &Arc<Task>,
        proc: &Arc<Proc>,
    ) -> Result<u32, ServiceError> {
        let rt = self.runtime()?;
        let pod = self.pod()?;
        let config = proc
            .config
            .clone()
            .ok_or_else(|| ServiceError::Invalid("the exec has no process".into()))?;
        let status = call(
            "reading the container",
            self.timeouts().call(),
            rt.container_status(&pod.id, &task.container),
        )
        .await?;
        let terminal = config.terminal;
        let spec = config.exec_spec(&status.config, ExecEnv::Replace);
        let fifos = Fifos::open(&proc.stdio)?;
        let deadline = self.timeouts().call();
        let pid = match tokio::time::timeout(deadline, pod.agent.exec(&proc.reference, spec)).await
        {
            Ok(r) => r.map_err(ServiceError::agent("starting the exec"))?,
            Err(_) => {
                return Err(ServiceError::Timeout {
                    what: "starting the exec",
                    secs: deadline.as_secs(),
                })
            }
        };
        let attached = bounded("attaching the exec's stdio", deadline, async {
            Process::attach(
                &pod.agent,
                proc.reference.clone(),
                terminal,
                fifos.has_stdin(),
            )
            .await
            .map_err(ServiceError::process("attaching the exec's stdio"))
        })
        .await;
        let process = match attached {
            Ok(p) => p,
            Err(e) => {
                let kill = pod.agent.signal(&proc.reference, libc::SIGKILL, false);
                let _ = tokio::time::timeout(deadline, kill).await;
                return Err(e);
            }
        };
        self.run(task, proc, process, fifos, pid).await;
        info!(container_id = %task.id, exec_id = %proc.exec_id, pid, "exec started");
        Ok(pid)
    }

    pub(super) async fn resize_pty(&self, req: ResizePtyRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        if !proc.stdio.terminal {
            return Err(ServiceError::State(format!(
                "process {} has no terminal",
                display_id(&task, &proc)
            )));
        }
        let running = proc.running().ok_or_else(|| {
            ServiceError::State(format!(
                "process {} is not running",
                display_id(&task, &proc)
            ))
        })?;
        let rows = u16::try_from(req.height).unwrap_or(u16::MAX);
        let cols = u16::try_from(req.width).unwrap_or(u16::MAX);
        bounded("resizing the terminal", self.timeouts().call(), async {
            running
                .agent
                .resize_terminal(&running.reference, rows, cols)
                .await
                .map_err(ServiceError::agent("resizing the terminal"))
        })
        .await
    }

    pub(super) fn close_io(&self, req: CloseIORequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        if req.stdin {
            if let Some(running) = proc.running() {
                // A stored permit: the pump sees it even if not waiting yet.
                running.close_stdin.notify_one();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_exec_ids_are_unique_and_bounded() {
        let long = "e".repeat(76);
        let a = agent_exec_id(&long);
        let b = agent_exec_id(&long);
        assert_ne!(a, b);
        assert!(a.len() <= 64, "{a}");
        assert!(a.starts_with(&"e".repeat(EXEC_PREFIX)));
    }
}
