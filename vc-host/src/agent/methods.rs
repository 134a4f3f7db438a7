//! One typed method per [`Request`]: the request built from arguments, the
//! expected response unpacked, any other response an
//! [`AgentClientError::UnexpectedResponse`].

use std::time::Duration;

use vc_proto::{
    ContainerSpec, ContainerStats, ContainerStatus, Event, GuestDetails, GuestInterface, Health,
    NetworkUpdate, PodSetup, ProcessRef, ProcessSpec, Request, Resources, Response, Route, Seccomp,
    StreamKind,
};

use super::client::AgentClient;
use super::error::AgentClientError;

/// The name of a response variant, for errors and logs.
pub(crate) fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Ok => "ok",
        Response::Error(_) => "error",
        Response::GuestDetails(_) => "guest-details",
        Response::Health(_) => "health",
        Response::Pid(_) => "pid",
        Response::Exited(_) => "exited",
        Response::ContainerStatus(_) => "container-status",
        Response::Stats(_) => "stats",
        Response::Event(_) => "event",
        Response::Interfaces(_) => "interfaces",
        Response::Routes(_) => "routes",
        Response::Pids(_) => "pids",
    }
}

impl AgentClient {
    /// Sends `request` and unpacks the response with `pick`, which gives the
    /// response back when it is not the expected one.
    async fn ask<T>(
        &self,
        request: Request,
        pick: impl FnOnce(Response) -> Result<T, Response>,
    ) -> Result<T, AgentClientError> {
        let name = request.name();
        let response = self.call(request).await?;
        pick(response).map_err(|other| AgentClientError::UnexpectedResponse {
            request: name,
            got: response_name(&other),
        })
    }

    async fn ask_ok(&self, request: Request) -> Result<(), AgentClientError> {
        self.ask(request, |r| match r {
            Response::Ok => Ok(()),
            r => Err(r),
        })
        .await
    }

    async fn ask_pid(&self, request: Request) -> Result<u32, AgentClientError> {
        self.ask(request, |r| match r {
            Response::Pid(pid) => Ok(pid),
            r => Err(r),
        })
        .await
    }

    async fn ask_exited(&self, request: Request) -> Result<i32, AgentClientError> {
        self.ask(request, |r| match r {
            Response::Exited(code) => Ok(code),
            r => Err(r),
        })
        .await
    }

    /// Liveness check of the agent.
    pub async fn ping(&self) -> Result<(), AgentClientError> {
        self.ask_ok(Request::Ping).await
    }

    /// Agent version, protocol version, kernel release, loaded modules and
    /// the guest's size.
    pub async fn guest_details(&self) -> Result<GuestDetails, AgentClientError> {
        self.ask(Request::GuestDetails, |r| match r {
            Response::GuestDetails(d) => Ok(d),
            r => Err(r),
        })
        .await
    }

    /// The guest's health.
    pub async fn health(&self) -> Result<Health, AgentClientError> {
        self.ask(Request::Health, |r| match r {
            Response::Health(h) => Ok(h),
            r => Err(r),
        })
        .await
    }

    /// Sets the pod up: hostname, DNS, shared mounts, network.
    pub async fn setup_pod(&self, setup: PodSetup) -> Result<(), AgentClientError> {
        self.ask_ok(Request::SetupPod(setup)).await
    }

    /// Creates a container; its main process is prepared, not started. Every
    /// process of the container runs under the `seccomp` filter; an agent that
    /// predates seccomp answers `Unsupported`.
    pub async fn create_container(
        &self,
        spec: ContainerSpec,
        seccomp: Seccomp,
    ) -> Result<(), AgentClientError> {
        self.ask_ok(Request::CreateContainerV2 { spec, seccomp })
            .await
    }

    /// Starts a created container's main process; returns its pid in the guest.
    pub async fn start_container(&self, container_id: &str) -> Result<u32, AgentClientError> {
        self.ask_pid(Request::StartContainer {
            container_id: container_id.to_owned(),
        })
        .await
    }

    /// Stops a container (SIGTERM, then SIGKILL after `grace`); returns the
    /// main process's exit code. The call's timeout is the call timeout plus
    /// `grace`.
    pub async fn stop_container(
        &self,
        container_id: &str,
        grace: Duration,
    ) -> Result<i32, AgentClientError> {
        self.ask_exited(Request::StopContainer {
            container_id: container_id.to_owned(),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        })
        .await
    }

    /// Removes a stopped or never started container.
    pub async fn remove_container(&self, container_id: &str) -> Result<(), AgentClientError> {
        self.ask_ok(Request::RemoveContainer {
            container_id: container_id.to_owned(),
        })
        .await
    }

    /// Freezes every process of a container.
    pub async fn pause_container(&self, container_id: &str) -> Result<(), AgentClientError> {
        self.ask_ok(Request::PauseContainer {
            container_id: container_id.to_owned(),
        })
        .await
    }

    /// Thaws a paused container.
    pub async fn resume_container(&self, container_id: &str) -> Result<(), AgentClientError> {
        self.ask_ok(Request::ResumeContainer {
            container_id: container_id.to_owned(),
        })
        .await
    }

    /// What the agent knows of a container.
    pub async fn container_state(
        &self,
        container_id: &str,
    ) -> Result<ContainerStatus, AgentClientError> {
        self.ask(
            Request::ContainerState {
                container_id: container_id.to_owned(),
            },
            |r| match r {
                Response::ContainerStatus(s) => Ok(s),
                r => Err(r),
            },
        )
        .await
    }

    /// Starts one more process; returns its pid in the guest.
    pub async fn exec(
        &self,
        process: &ProcessRef,
        spec: ProcessSpec,
    ) -> Result<u32, AgentClientError> {
        self.ask_pid(Request::Exec {
            process: process.clone(),
            spec,
        })
        .await
    }

    /// Starts one more process whose stdout and stderr (those `streams`
    /// names) are the connections parked for it with
    /// [`park`](Self::park): the process writes straight into them. Protocol
    /// version 3; an agent of version 2 answers `Unsupported`.
    pub async fn exec_direct(
        &self,
        process: &ProcessRef,
        spec: ProcessSpec,
        streams: Vec<StreamKind>,
    ) -> Result<u32, AgentClientError> {
        self.ask_pid(Request::ExecDirect {
            process: process.clone(),
            spec,
            streams,
        })
        .await
    }

    /// Whether the agent can hand a process its stream connections
    /// ([`park`](Self::park), [`exec_direct`](Self::exec_direct)): the
    /// negotiated protocol version is 3 or later.
    pub fn direct_streams(&self) -> bool {
        self.protocol_version() >= vc_proto::DIRECT_STREAMS_VERSION
    }

    /// Sends `signal` to a process, or with `all` to every process of its
    /// container.
    pub async fn signal(
        &self,
        process: &ProcessRef,
        signal: i32,
        all: bool,
    ) -> Result<(), AgentClientError> {
        self.ask_ok(Request::Signal {
            process: process.clone(),
            signal,
            all,
        })
        .await
    }

    /// Waits for a process to exit and returns its exit code (128 + signal
    /// when signalled). No timeout; ended by the VM or the connection going
    /// away, in which case the error's
    /// [`exit_code`](AgentClientError::exit_code) is
    /// [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE).
    pub async fn wait(&self, process: &ProcessRef) -> Result<i32, AgentClientError> {
        self.ask_exited(Request::Wait {
            process: process.clone(),
        })
        .await
    }

    /// Resizes a process's terminal.
    pub async fn resize_terminal(
        &self,
        process: &ProcessRef,
        rows: u16,
        cols: u16,
    ) -> Result<(), AgentClientError> {
        self.ask_ok(Request::ResizeTerminal {
            process: process.clone(),
            rows,
            cols,
        })
        .await
    }

    /// Closes a process's stdin (end-of-file).
    pub async fn close_stdin(&self, process: &ProcessRef) -> Result<(), AgentClientError> {
        self.ask_ok(Request::CloseStdin {
            process: process.clone(),
        })
        .await
    }

    /// Changes a running container's cgroup limits (`None` fields unchanged).
    pub async fn update_resources(
        &self,
        container_id: &str,
        resources: Resources,
    ) -> Result<(), AgentClientError> {
        self.ask_ok(Request::UpdateResources {
            container_id: container_id.to_owned(),
            resources,
        })
        .await
    }

    /// A container's resource usage.
    pub async fn stats(&self, container_id: &str) -> Result<ContainerStats, AgentClientError> {
        self.ask(
            Request::Stats {
                container_id: container_id.to_owned(),
            },
            |r| match r {
                Response::Stats(s) => Ok(s),
                r => Err(r),
            },
        )
        .await
    }

    /// The pids (in the guest) of every process of a container, ascending.
    /// A reply longer than [`vc_proto::MAX_CONTAINER_PIDS`] is refused
    /// ([`AgentClientError::OversizedReply`]): the agent never sends one.
    pub async fn container_pids(&self, container_id: &str) -> Result<Vec<u32>, AgentClientError> {
        let pids = self
            .ask(
                Request::ContainerPids {
                    container_id: container_id.to_owned(),
                },
                |r| match r {
                    Response::Pids(p) => Ok(p),
                    r => Err(r),
                },
            )
            .await?;
        if pids.len() > vc_proto::MAX_CONTAINER_PIDS {
            return Err(AgentClientError::OversizedReply {
                request: "container-pids",
                items: pids.len(),
                limit: vc_proto::MAX_CONTAINER_PIDS,
            });
        }
        Ok(pids)
    }

    /// The next event (OOM kill, process exit). No timeout; ended by the VM
    /// or the connection going away.
    pub async fn next_event(&self) -> Result<Event, AgentClientError> {
        self.ask(Request::NextEvent, |r| match r {
            Response::Event(e) => Ok(e),
            r => Err(r),
        })
        .await
    }

    /// The guest's network interfaces.
    pub async fn list_interfaces(&self) -> Result<Vec<GuestInterface>, AgentClientError> {
        self.ask(Request::ListInterfaces, |r| match r {
            Response::Interfaces(i) => Ok(i),
            r => Err(r),
        })
        .await
    }

    /// The guest's main routing table.
    pub async fn list_routes(&self) -> Result<Vec<Route>, AgentClientError> {
        self.ask(Request::ListRoutes, |r| match r {
            Response::Routes(routes) => Ok(routes),
            r => Err(r),
        })
        .await
    }

    /// Brings the set-up pod's network to `update` (interfaces, addresses,
    /// routes, neighbours). An agent that predates it answers `Unsupported`.
    pub async fn update_network(&self, update: NetworkUpdate) -> Result<(), AgentClientError> {
        self.ask_ok(Request::UpdateNetwork(update)).await
    }

    /// Asks the agent to stop every container, sync and power the VM off. The
    /// agent answers before powering off; the connection then ends.
    pub async fn shutdown(&self) -> Result<(), AgentClientError> {
        self.ask_ok(Request::Shutdown).await
    }
}
