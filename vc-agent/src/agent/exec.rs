//! Processes by reference: `Exec`, `ExecDirect`, `Signal`, `Wait`,
//! `ResizeTerminal`, `CloseStdin`, and the stream attach and park of the
//! server.

use std::sync::Arc;

use nix::sys::signal::Signal;
use std::os::fd::OwnedFd;
use std::time::Duration;

use vc_proto::{
    AgentError, ErrorCode, Event, ProcessRef, ProcessSpec, Response, StreamAttach, StreamKind,
    StreamPark, DIRECT_STREAMS_VERSION,
};

use super::errors::{fail, wire};
use super::Agent;
use crate::process::parked::Reservation;
use crate::process::{DirectOutput, Launch, Process, StreamEnd};

fn parse_signal(signal: i32) -> Result<Signal, AgentError> {
    Signal::try_from(signal).map_err(|_| {
        fail(
            ErrorCode::InvalidArgument,
            format!("{signal} is not a signal number"),
        )
    })
}

impl Agent {
    /// Starts one more process: in a container, or in the VM outside any
    /// container when `container_id` is empty.
    pub(super) async fn exec(
        self: &Arc<Self>,
        key: ProcessRef,
        spec: ProcessSpec,
    ) -> Result<Response, AgentError> {
        self.exec_with(key, spec, &[]).await
    }

    /// `ExecDirect`: as [`exec`](Self::exec), with the parked connections of
    /// `streams` as the process's stdout and stderr.
    pub(super) async fn exec_direct(
        self: &Arc<Self>,
        key: ProcessRef,
        spec: ProcessSpec,
        streams: Vec<StreamKind>,
        protocol_version: u16,
    ) -> Result<Response, AgentError> {
        if protocol_version < DIRECT_STREAMS_VERSION {
            return Err(fail(
                ErrorCode::Unsupported,
                format!(
                    "direct streams need protocol version {DIRECT_STREAMS_VERSION}; \
                     this connection speaks {protocol_version}"
                ),
            ));
        }
        if spec.terminal && !streams.is_empty() {
            return Err(fail(
                ErrorCode::InvalidArgument,
                "a process with a terminal has no separate stdout and stderr to hand over",
            ));
        }
        self.exec_with(key, spec, &streams).await
    }

    async fn exec_with(
        self: &Arc<Self>,
        key: ProcessRef,
        spec: ProcessSpec,
        streams: &[StreamKind],
    ) -> Result<Response, AgentError> {
        if key.exec_id.as_deref().is_none_or(str::is_empty) {
            return Err(fail(
                ErrorCode::InvalidArgument,
                "exec needs an exec id (the main process is started by StartContainer)",
            ));
        }
        let Some(program) = spec.args.first().cloned() else {
            return Err(fail(
                ErrorCode::InvalidArgument,
                "the process has no arguments: args[0] names the program",
            ));
        };
        // Claimed first: whatever fails below drops them, which ends the
        // host's streams.
        let direct = if streams.is_empty() {
            DirectOutput::default()
        } else {
            self.parked.claim(&key, streams).map_err(wire)?
        };
        let launch: Box<dyn Launch> = if key.container_id.is_empty() {
            Box::new(crate::container::LaunchPlan::host(&spec).map_err(wire)?)
        } else {
            self.exec_plan(&key.container_id, &spec)?
        };
        let process = self
            .processes
            .spawn(key, launch, spec.terminal, direct, program)
            .await
            .map_err(wire)?;
        let pid = process.pid().as_raw() as u32;
        tracing::info!(
            container_id = %process.key().container_id,
            exec_id = ?process.key().exec_id,
            pid,
            "process started"
        );
        self.watch_exit(process);
        Ok(Response::Pid(pid))
    }

    /// Follows a started process to its exit: logs it, records a container's
    /// main exit, and queues the `Exited` event.
    pub(super) fn watch_exit(self: &Arc<Self>, process: Arc<Process>) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            let code = process.wait().await;
            let key = process.key().clone();
            tracing::info!(
                container_id = %key.container_id,
                exec_id = ?key.exec_id,
                pid = process.pid().as_raw(),
                code,
                "process exited"
            );
            if key.exec_id.is_none() && !key.container_id.is_empty() {
                agent.main_exited(&key.container_id, code);
            }
            agent.events.push(Event::Exited { process: key, code });
        });
    }

    pub(super) fn signal(
        self: &Arc<Self>,
        key: &ProcessRef,
        signal: i32,
        all: bool,
    ) -> Result<Response, AgentError> {
        let signal = parse_signal(signal)?;
        if all {
            if key.container_id.is_empty() {
                return Err(fail(
                    ErrorCode::InvalidArgument,
                    "signalling every process needs a container id",
                ));
            }
            self.signal_container(&key.container_id, signal)?;
            return Ok(Response::Ok);
        }
        let process = self.processes.get(key).map_err(wire)?;
        process.signal(signal).map_err(|errno| {
            fail(
                ErrorCode::System,
                format!("cannot send {signal} to pid {}: {errno}", process.pid()),
            )
        })?;
        Ok(Response::Ok)
    }

    pub(super) async fn wait(self: &Arc<Self>, key: &ProcessRef) -> Result<Response, AgentError> {
        let process = self.processes.get(key).map_err(wire)?;
        Ok(Response::Exited(process.wait().await))
    }

    pub(super) fn resize(
        self: &Arc<Self>,
        key: &ProcessRef,
        rows: u16,
        cols: u16,
    ) -> Result<Response, AgentError> {
        let process = self.processes.get(key).map_err(wire)?;
        process.stdio().resize(rows, cols).map_err(wire)?;
        Ok(Response::Ok)
    }

    pub(super) fn close_stdin(self: &Arc<Self>, key: &ProcessRef) -> Result<Response, AgentError> {
        let process = self.processes.get(key).map_err(wire)?;
        process.stdio().close_stdin().map_err(wire)?;
        Ok(Response::Ok)
    }

    /// Takes the slot of a parked stream (the first step of a park): the
    /// process must not exist yet.
    pub fn reserve_park(&self, park: &StreamPark) -> Result<Reservation, AgentError> {
        if self.processes.get(&park.process).is_ok() {
            return Err(fail(
                ErrorCode::AlreadyExists,
                format!(
                    "process {} exists: parked streams are for a process not started yet",
                    crate::process::Display(park.process.clone())
                ),
            ));
        }
        self.parked
            .reserve(&park.process, park.stream)
            .map_err(wire)
    }

    /// Parks the connection's socket in its slot until an `ExecDirect` claims
    /// it or the park's timeout passes.
    pub fn fill_park(&self, reservation: Reservation, socket: OwnedFd, park: &StreamPark) {
        reservation.fill(socket, Duration::from_millis(u64::from(park.timeout_ms)));
    }

    /// How many streams are parked now.
    pub fn parked_streams(&self) -> usize {
        self.parked.len()
    }

    /// Hands a process stream to a stream connection (once per stream).
    pub fn attach(&self, attach: &StreamAttach) -> Result<(Arc<Process>, StreamEnd), AgentError> {
        let process = self.processes.get(&attach.process).map_err(wire)?;
        let end = process.take_stream(attach.stream).map_err(wire)?;
        Ok((process, end))
    }
}
