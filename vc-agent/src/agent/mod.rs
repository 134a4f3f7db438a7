//! The [`Agent`]: the guest's state and one handler per request.
//!
//! Each piece of mutable state has one owner: the processes
//! ([`ProcessTable`], shared with the reaper), the output connections parked
//! for processes not started yet ([`ParkedStreams`]), the containers
//! (`containers::Containers`), the pod setup (`pod::PodState`) and the event
//! queue ([`Events`]). Handlers are in the files named after what they touch.

mod containers;
mod errors;
mod exec;
pub(crate) mod guest;
mod modules;
mod pod;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use vc_proto::{Request, Response, Seccomp};

use crate::config::DebugFlags;
use crate::container::ContainerPaths;
use crate::events::{EventSink, Events};
use crate::process::{ParkedStreams, ProcessTable, ReapMode};

pub use errors::ToAgentError;
pub use modules::LateModules;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The agent is PID 1 of a guest: it reaps every orphan, may change the
    /// system (hostname, mounts, network) in `SetupPod`, and powers the VM off
    /// on `Shutdown`. When false (a normal process, tests) only its own children
    /// are reaped and `SetupPod` only writes its files.
    pub guest: bool,
    /// Where `SetupPod` writes `resolv.conf`, `hosts` and `hostname` for the
    /// containers (`/run/vc` in the guest).
    pub run_dir: PathBuf,
    /// The modules loaded before the listener, reported by `GuestDetails`.
    pub modules_loaded: Vec<String>,
    /// The modules loaded once the listener is up, from `module_dir`
    /// (see [`LateModules`]).
    pub modules_late: Vec<String>,
    /// Where the module files are.
    pub module_dir: PathBuf,
    /// Debug switches.
    pub debug: DebugFlags,
    /// Where containers live (state directories, cgroup parent). Its
    /// `etc_dir` should be `run_dir`, where the pod files are.
    pub containers: ContainerPaths,
}

impl AgentOptions {
    /// Options of PID 1 in the guest.
    pub fn guest(
        modules_loaded: Vec<String>,
        modules_late: Vec<String>,
        debug: DebugFlags,
    ) -> Self {
        Self {
            guest: true,
            run_dir: PathBuf::from("/run/vc"),
            modules_loaded,
            modules_late,
            module_dir: PathBuf::from(crate::boot::MODULE_DIR),
            debug,
            containers: ContainerPaths::default(),
        }
    }

    /// Options of a normal process (tests) that writes its pod files to
    /// `run_dir` and keeps container state directories in `run_dir/containers`
    /// (the cgroups stay under `/sys/fs/cgroup/vc` unless `containers` is
    /// changed).
    pub fn process(run_dir: impl Into<PathBuf>) -> Self {
        let run_dir = run_dir.into();
        Self {
            guest: false,
            containers: ContainerPaths {
                state_dir: run_dir.join("containers"),
                etc_dir: run_dir.clone(),
                ..ContainerPaths::default()
            },
            run_dir,
            modules_loaded: Vec::new(),
            modules_late: Vec::new(),
            module_dir: PathBuf::new(),
            debug: DebugFlags::default(),
        }
    }
}

/// The agent's state. Shared as `Arc<Agent>` by every connection.
#[derive(Debug)]
pub struct Agent {
    options: AgentOptions,
    processes: ProcessTable,
    parked: Arc<ParkedStreams>,
    containers: containers::Containers,
    pod: pod::PodState,
    events: Arc<Events>,
    modules: LateModules,
    shutdown: watch::Sender<bool>,
    _reaper: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Creates the agent and starts its reaper on the current tokio runtime
    /// (so it must be called from within one).
    pub fn new(options: AgentOptions) -> std::io::Result<Arc<Self>> {
        let mode = if options.guest {
            ReapMode::All
        } else {
            ReapMode::Own
        };
        let processes = ProcessTable::new(mode);
        let reaper = processes.start_reaper()?;
        let modules = LateModules::new(
            options.modules_loaded.clone(),
            options.modules_late.clone(),
            options.module_dir.clone(),
        );
        Ok(Arc::new(Self {
            modules,
            options,
            processes,
            parked: Arc::default(),
            containers: containers::Containers::default(),
            pod: pod::PodState::default(),
            events: Events::new(),
            shutdown: watch::channel(false).0,
            _reaper: reaper,
        }))
    }

    /// How the agent runs.
    pub fn options(&self) -> &AgentOptions {
        &self.options
    }

    /// A handle to push events (OOM kills) into the `NextEvent` queue.
    pub fn event_sink(&self) -> EventSink {
        self.events.sink()
    }

    /// The processes the agent started.
    pub fn processes(&self) -> &ProcessTable {
        &self.processes
    }

    /// The modules loaded in the background.
    pub fn late_modules(&self) -> &LateModules {
        &self.modules
    }

    /// Answers one request. `protocol_version` is the connection's. Every
    /// request but the liveness ones and shutdown waits for the late
    /// modules first (see [`LateModules`]).
    pub async fn handle(self: &Arc<Self>, request: Request, protocol_version: u16) -> Response {
        if !matches!(request, Request::Ping | Request::Health | Request::Shutdown) {
            if let Err(e) = self.modules.ready().await {
                return Response::Error(e);
            }
        }
        let result = match request {
            Request::Ping => Ok(Response::Ok),
            Request::GuestDetails => self.guest_details(protocol_version),
            Request::Health => self.health(),
            Request::SetupPod(setup) => self.setup_pod(setup).await,
            Request::CreateContainer(spec) => self.create_container(spec, Seccomp::Default).await,
            Request::CreateContainerV2 { spec, seccomp } => {
                self.create_container(spec, seccomp).await
            }
            Request::StartContainer { container_id } => self.start_container(&container_id).await,
            Request::StopContainer {
                container_id,
                grace_ms,
            } => {
                self.stop_container(&container_id, std::time::Duration::from_millis(grace_ms))
                    .await
            }
            Request::RemoveContainer { container_id } => self.remove_container(&container_id).await,
            Request::PauseContainer { container_id } => self.pause(&container_id, true).await,
            Request::ResumeContainer { container_id } => self.pause(&container_id, false).await,
            Request::ContainerState { container_id } => self.container_state(&container_id),
            Request::Exec { process, spec } => self.exec(process, spec).await,
            Request::Signal {
                process,
                signal,
                all,
            } => self.signal(&process, signal, all),
            Request::Wait { process } => self.wait(&process).await,
            Request::ResizeTerminal {
                process,
                rows,
                cols,
            } => self.resize(&process, rows, cols),
            Request::CloseStdin { process } => self.close_stdin(&process),
            Request::UpdateResources {
                container_id,
                resources,
            } => self.update_resources(&container_id, resources).await,
            Request::Stats { container_id } => self.stats(&container_id).await,
            Request::ContainerPids { container_id } => self.container_pids(&container_id).await,
            Request::NextEvent => Ok(Response::Event(self.events.next().await)),
            Request::ListInterfaces => self.list_interfaces().await,
            Request::ListRoutes => self.list_routes().await,
            Request::UpdateNetwork(update) => self.update_network(update).await,
            // The server calls `request_shutdown` once this answer is written.
            Request::Shutdown => Ok(Response::Ok),
            Request::ExecDirect {
                process,
                spec,
                streams,
            } => {
                self.exec_direct(process, spec, streams, protocol_version)
                    .await
            }
        };
        result.unwrap_or_else(Response::Error)
    }

    /// Asks the agent to shut down: listeners stop accepting, and the owner of
    /// the agent (the binary) stops containers and powers off.
    pub fn request_shutdown(&self) {
        tracing::info!("shutdown requested");
        self.shutdown.send_replace(true);
    }

    /// Whether shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once shutdown is requested.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|requested| *requested).await;
    }

    /// Stops every running container (SIGTERM, `grace`, SIGKILL) and kills the
    /// processes outside containers: the end of the agent's work.
    pub async fn stop_everything(self: &Arc<Self>, grace: std::time::Duration) {
        self.stop_all_containers(grace).await;
        for process in self.processes.running() {
            if process.key().container_id.is_empty() {
                let _ = process.signal(nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}
