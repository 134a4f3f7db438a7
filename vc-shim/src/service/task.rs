//! The container's lifecycle RPCs: Create, Start, Delete, State, Kill,
//! Wait, Pause, Resume, Update, Stats, Connect, Shutdown.

use std::path::PathBuf;
use std::sync::Arc;

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse, DeleteRequest,
    DeleteResponse, KillRequest, PauseRequest, ResumeRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim::protos::types::task::Status;
use tokio::sync::Notify;
use tracing::{info, warn};
use vc_host::runtime::Process;
use vc_proto::ProcessRef;

use super::events::timestamp;
use super::io::{self, Fifos};
use super::state::{lock, Phase, Proc, Running, Stdio, Task};
use super::{bounded, call, ServiceError, Shared};
use crate::group::{self, Role};
use crate::{bundle, rootfs};

/// The version Connect reports.
const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Shared {
    pub(super) async fn create(
        self: &Arc<Self>,
        req: CreateTaskRequest,
    ) -> Result<CreateTaskResponse, ServiceError> {
        let _guard = self.lifecycle.lock().await;
        let id = req.id.clone();
        if lock(&self.tasks).contains_key(&id) {
            return Err(ServiceError::Exists(format!("task {id}")));
        }
        if self.vm_gone() {
            return Err(ServiceError::State(
                "the pod's VM is gone; no task can be created in it".into(),
            ));
        }
        if !req.checkpoint.is_empty() {
            return Err(ServiceError::Unsupported(
                "vc cannot restore a task from a checkpoint",
            ));
        }
        let container = group::container_id(&id)?;
        let bundle_dir = PathBuf::from(&req.bundle);
        let mounts = req.rootfs.clone();
        let dir = bundle_dir.clone();
        let mounted = tokio::task::spawn_blocking(move || rootfs::mount(&dir, &mounts))
            .await
            .map_err(|e| ServiceError::Setup(format!("the rootfs mount task failed: {e}")))??;
        let rootfs = match &mounted {
            Some(p) => p.clone(),
            None => bundle::spec_rootfs(&bundle_dir)?,
        };
        let created = self
            .create_container(&req, container.clone(), &bundle_dir, &rootfs)
            .await;
        let owns_pod = match created {
            Ok(owns) => owns,
            Err(e) => {
                if mounted.is_some() {
                    if let Err(undo) = rootfs::unmount(&bundle_dir) {
                        warn!(error = %undo, "cannot unmount the rootfs of a failed create");
                    }
                }
                return Err(e);
            }
        };
        let init = Proc::new(
            String::new(),
            ProcessRef {
                container_id: container.to_string(),
                exec_id: None,
            },
            Stdio {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            None,
        );
        let task = Task::new(
            id.clone(),
            container,
            bundle_dir,
            mounted.is_some(),
            owns_pod,
            init,
        );
        lock(&self.tasks).insert(id.clone(), Arc::new(task));
        info!(container_id = %id, "task created");
        self.events
            .publish(TaskCreate {
                container_id: id,
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: Some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..TaskIO::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: 0,
                ..TaskCreate::default()
            })
            .await;
        Ok(CreateTaskResponse {
            pid: 0,
            ..CreateTaskResponse::default()
        })
    }

    /// Creates the container in the pod (booting the pod first when the
    /// task makes it). Returns whether the task owns the pod.
    async fn create_container(
        self: &Arc<Self>,
        req: &CreateTaskRequest,
        container: vc_host::id::ContainerId,
        bundle_dir: &std::path::Path,
        rootfs: &std::path::Path,
    ) -> Result<bool, ServiceError> {
        let rt = self.runtime()?;
        let mut b = bundle::load(container, bundle_dir, rootfs)?;
        b.container.terminal = req.terminal;
        let owns = b.role.owns_pod();
        let pod = if owns {
            if let Some(pod) = lock(&self.pod).as_ref() {
                return Err(ServiceError::State(format!(
                    "this shim already serves pod {} (task {}); task {} would make another",
                    pod.id, pod.owner, req.id
                )));
            }
            self.boot_pod(&req.id, &b).await?
        } else {
            let pod = self.pod()?;
            if let Role::Container { sandbox_id } = &b.role {
                if group::pod_id(sandbox_id)? != pod.id {
                    return Err(ServiceError::Invalid(format!(
                        "task {} belongs to sandbox {sandbox_id}, but this shim serves pod {}",
                        req.id, pod.id
                    )));
                }
            }
            pod
        };
        let created = call(
            "creating the container",
            self.timeouts().call(),
            rt.create_container(&pod.id, b.container),
        )
        .await;
        if let Err(e) = created {
            if owns {
                self.teardown_pod().await;
            }
            return Err(e);
        }
        Ok(owns)
    }

    pub(super) async fn start(
        self: &Arc<Self>,
        req: StartRequest,
    ) -> Result<StartResponse, ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        if proc.phase() != Phase::Created {
            return Err(ServiceError::State(format!(
                "process {} of task {} was already started",
                display_id(&task, &proc),
                task.id
            )));
        }
        let pid = if req.exec_id.is_empty() {
            self.start_init(&task).await?
        } else {
            self.start_exec(&task, &proc).await?
        };
        Ok(StartResponse {
            pid,
            ..StartResponse::default()
        })
    }

    async fn start_init(self: &Arc<Self>, task: &Arc<Task>) -> Result<u32, ServiceError> {
        let rt = self.runtime()?;
        let pod = self.pod()?;
        let proc = task.init.clone();
        let fifos = Fifos::open(&proc.stdio)?;
        let status = call(
            "starting the container",
            self.timeouts().call(),
            rt.start_container(&pod.id, &task.container),
        )
        .await?;
        let pid = status.pid.unwrap_or(0);
        let attached = bounded(
            "attaching the container's stdio",
            self.timeouts().call(),
            async {
                Process::attach(
                    &pod.agent,
                    proc.reference.clone(),
                    proc.stdio.terminal,
                    fifos.has_stdin(),
                )
                .await
                .map_err(ServiceError::process("attaching the container's stdio"))
            },
        )
        .await;
        let process = match attached {
            Ok(p) => p,
            Err(e) => {
                // Nobody could read its output: do not leave it running.
                let kill = pod.agent.signal(&proc.reference, libc::SIGKILL, true);
                let _ = tokio::time::timeout(self.timeouts().call(), kill).await;
                return Err(e);
            }
        };
        self.run(task, &proc, process, fifos, pid).await;
        info!(container_id = %task.id, pid, "task started");
        Ok(pid)
    }

    /// Records a started process, starts its I/O, announces it, and
    /// supervises it until its exit is reported.
    pub(super) async fn run(
        self: &Arc<Self>,
        task: &Arc<Task>,
        proc: &Arc<Proc>,
        mut process: Process,
        fifos: Fifos,
        pid: u32,
    ) {
        let close_stdin = Arc::new(Notify::new());
        let name = display_id(task, proc);
        let pumps = io::start(&mut process, fifos, close_stdin.clone(), &name);
        let running = Arc::new(Running {
            agent: process.agent().clone(),
            reference: process.reference().clone(),
            close_stdin,
        });
        drop(process);
        proc.set_running(pid, running.clone());
        if proc.exec_id.is_empty() {
            self.events
                .publish(TaskStart {
                    container_id: task.id.clone(),
                    pid,
                    ..TaskStart::default()
                })
                .await;
        } else {
            self.events
                .publish(containerd_shim::protos::events::task::TaskExecStarted {
                    container_id: task.id.clone(),
                    exec_id: proc.exec_id.clone(),
                    pid,
                    ..Default::default()
                })
                .await;
        }
        let shared = self.clone();
        let task = task.clone();
        let proc = proc.clone();
        let drain = self.timeouts().drain();
        let span = tracing::info_span!("process", container_id = %task.id, exec_id = %proc.exec_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let code = match running.agent.wait(&running.reference).await {
                    Ok(code) => code,
                    Err(e) => {
                        if !e.agent_gone() {
                            warn!(error = %super::error::chain(&e), "waiting for the process failed");
                        }
                        e.exit_code().unwrap_or(vc_proto::EXIT_CODE_VM_GONE)
                    }
                };
                pumps.drain(&running.agent, drain).await;
                let code = u32::try_from(code).unwrap_or(vc_proto::EXIT_CODE_VM_GONE as u32);
                shared.report_exit(&task, &proc, code).await;
            },
            span,
        ));
    }

    /// Records an exit and publishes TaskExit (once per process).
    pub(super) async fn report_exit(&self, task: &Task, proc: &Proc, code: u32) {
        let Some(exit) = proc.set_exited(code) else {
            return;
        };
        info!(container_id = %task.id, exec_id = %proc.exec_id, code, "process exited");
        self.events
            .publish(TaskExit {
                container_id: task.id.clone(),
                id: display_id(task, proc),
                pid: proc.pid(),
                exit_status: exit.code,
                exited_at: Some(timestamp(exit.at)).into(),
                ..TaskExit::default()
            })
            .await;
    }

    pub(super) async fn delete(
        self: &Arc<Self>,
        req: DeleteRequest,
    ) -> Result<DeleteResponse, ServiceError> {
        let task = self.task(&req.id)?;
        if !req.exec_id.is_empty() {
            let proc = process(&task, &req.exec_id)?;
            if proc.phase() == Phase::Running {
                return Err(ServiceError::State(format!(
                    "exec {} of task {} is running; kill it first",
                    req.exec_id, req.id
                )));
            }
            task.remove_exec(&req.exec_id);
            return Ok(delete_response(&proc));
        }
        let _guard = self.lifecycle.lock().await;
        let proc = task.init.clone();
        if proc.phase() == Phase::Running {
            return Err(ServiceError::State(format!(
                "task {} is running; kill it first",
                req.id
            )));
        }
        let removed = self.remove_container(&task).await;
        if let Err(e) = &removed {
            if !task.owns_pod {
                return Err(ServiceError::State(super::error::chain(e)));
            }
            warn!(container_id = %task.id, error = %super::error::chain(e), "cannot delete the container; the pod goes with it");
        }
        if task.owns_pod {
            self.teardown_pod().await;
        }
        if task.mounted {
            let dir = task.bundle.clone();
            match tokio::task::spawn_blocking(move || rootfs::unmount(&dir)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(container_id = %task.id, error = %e, "cannot unmount the rootfs")
                }
                Err(e) => warn!(container_id = %task.id, error = %e, "the unmount task failed"),
            }
        }
        lock(&self.tasks).remove(&req.id);
        if proc.phase() == Phase::Created {
            // Never started: it will not run any more.
            proc.set_exited(0);
        }
        let response = delete_response(&proc);
        self.events
            .publish(TaskDelete {
                container_id: task.id.clone(),
                pid: response.pid,
                exit_status: response.exit_status,
                exited_at: response.exited_at.clone(),
                id: task.id.clone(),
                ..TaskDelete::default()
            })
            .await;
        info!(container_id = %task.id, "task deleted");
        Ok(response)
    }

    /// Removes the container from the pod (nothing to do once the VM is gone).
    async fn remove_container(&self, task: &Task) -> Result<(), ServiceError> {
        if self.vm_gone() {
            return Ok(());
        }
        let Ok(pod) = self.pod() else { return Ok(()) };
        let rt = self.runtime()?;
        let deadline = self.timeouts().stop();
        if task.init.phase() == Phase::Created {
            call(
                "stopping the container",
                deadline,
                rt.stop_container(&pod.id, &task.container, std::time::Duration::ZERO),
            )
            .await?;
        }
        call(
            "deleting the container",
            deadline,
            rt.delete_container(&pod.id, &task.container),
        )
        .await
    }

    pub(super) fn state(&self, req: StateRequest) -> Result<StateResponse, ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        let status = match proc.phase() {
            Phase::Created => Status::CREATED,
            Phase::Running if task.paused() => Status::PAUSED,
            Phase::Running => Status::RUNNING,
            Phase::Stopped => Status::STOPPED,
        };
        let exit = proc.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: proc.pid(),
            status: status.into(),
            stdin: proc.stdio.stdin.clone(),
            stdout: proc.stdio.stdout.clone(),
            stderr: proc.stdio.stderr.clone(),
            terminal: proc.stdio.terminal,
            exit_status: exit.map_or(0, |e| e.code),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..StateResponse::default()
        })
    }

    pub(super) async fn kill(self: &Arc<Self>, req: KillRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        let signal = i32::try_from(req.signal)
            .map_err(|_| ServiceError::Invalid(format!("signal {} is out of range", req.signal)))?;
        match proc.phase() {
            Phase::Stopped => Err(ServiceError::Finished(display_id(&task, &proc))),
            Phase::Created => {
                // Never started: it ends without running.
                if req.exec_id.is_empty() && !self.vm_gone() {
                    if let (Ok(rt), Ok(pod)) = (self.runtime(), self.pod()) {
                        call(
                            "stopping the container",
                            self.timeouts().call(),
                            rt.stop_container(&pod.id, &task.container, std::time::Duration::ZERO),
                        )
                        .await?;
                    }
                }
                let code = u32::try_from(128 + signal).unwrap_or(137);
                self.report_exit(&task, &proc, code).await;
                Ok(())
            }
            Phase::Running => {
                let pod = self.pod()?;
                let signalled = tokio::time::timeout(
                    self.timeouts().call(),
                    pod.agent.signal(&proc.reference, signal, req.all),
                )
                .await;
                match signalled {
                    Ok(Ok(())) => {
                        info!(container_id = %task.id, exec_id = %proc.exec_id, signal, all = req.all, "signalled");
                        Ok(())
                    }
                    // It ended meanwhile: its supervisor reports the exit.
                    Ok(Err(_)) if proc.phase() == Phase::Stopped => Ok(()),
                    Ok(Err(e)) => Err(ServiceError::agent("signalling the process")(e)),
                    Err(_) => Err(ServiceError::Timeout {
                        what: "signalling the process",
                        secs: self.timeouts().call().as_secs(),
                    }),
                }
            }
        }
    }

    pub(super) async fn wait(&self, req: WaitRequest) -> Result<WaitResponse, ServiceError> {
        let task = self.task(&req.id)?;
        let proc = process(&task, &req.exec_id)?;
        let exit = proc.wait().await;
        Ok(WaitResponse {
            exit_status: exit.code,
            exited_at: Some(timestamp(exit.at)).into(),
            ..WaitResponse::default()
        })
    }

    pub(super) async fn pause(&self, req: PauseRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let pod = self.pod()?;
        call(
            "pausing the container",
            self.timeouts().call(),
            self.runtime()?.pause_container(&pod.id, &task.container),
        )
        .await?;
        task.set_paused(true);
        info!(container_id = %task.id, "task paused");
        self.events
            .publish(TaskPaused {
                container_id: task.id.clone(),
                ..TaskPaused::default()
            })
            .await;
        Ok(())
    }

    pub(super) async fn resume(&self, req: ResumeRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let pod = self.pod()?;
        call(
            "resuming the container",
            self.timeouts().call(),
            self.runtime()?.resume_container(&pod.id, &task.container),
        )
        .await?;
        task.set_paused(false);
        info!(container_id = %task.id, "task resumed");
        self.events
            .publish(TaskResumed {
                container_id: task.id.clone(),
                ..TaskResumed::default()
            })
            .await;
        Ok(())
    }

    pub(super) async fn update(&self, req: UpdateTaskRequest) -> Result<(), ServiceError> {
        let task = self.task(&req.id)?;
        let pod = self.pod()?;
        let Some(any) = req.resources.as_ref() else {
            return Ok(());
        };
        let resources = bundle::resources(&any.value)?;
        call(
            "updating the container's limits",
            self.timeouts().call(),
            self.runtime()?
                .update_container(&pod.id, &task.container, &resources),
        )
        .await?;
        info!(container_id = %task.id, "task updated");
        Ok(())
    }

    pub(super) async fn stats(&self, req: StatsRequest) -> Result<StatsResponse, ServiceError> {
        let task = self.task(&req.id)?;
        let pod = self.pod()?;
        let stats = call(
            "reading the container's statistics",
            self.timeouts().call(),
            self.runtime()?.container_stats(&pod.id, &task.container),
        )
        .await?;
        let any = super::stats::metrics_any(&stats)
            .map_err(|e| ServiceError::Invalid(format!("cannot encode the metrics: {e}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..StatsResponse::default()
        })
    }

    pub(super) fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse, ServiceError> {
        let task = self.task(&req.id)?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task.init.pid(),
            version: VERSION.to_owned(),
            ..ConnectResponse::default()
        })
    }

    /// Ends the shim when it serves no task any more.
    pub(super) async fn shutdown(&self) {
        if !lock(&self.tasks).is_empty() {
            return;
        }
        let _guard = self.lifecycle.lock().await;
        self.teardown_pod().await;
        info!("shim shutting down");
        self.exit.signal();
    }
}

/// The process an exec id names (the init process for an empty one).
pub(super) fn process(task: &Task, exec_id: &str) -> Result<Arc<Proc>, ServiceError> {
    task.process(exec_id)
        .ok_or_else(|| ServiceError::ExecNotFound {
            task: task.id.clone(),
            exec: exec_id.to_owned(),
        })
}

/// The id containerd knows a process by: the task's for init, else the exec's.
pub(super) fn display_id(task: &Task, proc: &Proc) -> String {
    if proc.exec_id.is_empty() {
        task.id.clone()
    } else {
        proc.exec_id.clone()
    }
}

fn delete_response(proc: &Proc) -> DeleteResponse {
    let exit = proc.exit();
    DeleteResponse {
        pid: proc.pid(),
        exit_status: exit.map_or(0, |e| e.code),
        exited_at: exit.map(|e| timestamp(e.at)).into(),
        ..DeleteResponse::default()
    }
}
