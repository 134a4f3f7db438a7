//! Processes by reference: `Exec`, `Signal`, `Wait`, `ResizeTerminal`,
//! `CloseStdin`, and the stream attach of the server.

use std::sync::Arc;

use nix::sys::signal::Signal;
use vc_proto::{AgentError, ErrorCode, Event, ProcessRef, ProcessSpec, Response, StreamAttach};

use super::errors::{fail, wire};
use super::Agent;
use crate::process::{Launch, Process, StreamEnd};

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
        let launch: Box<dyn Launch> = if key.container_id.is_empty() {
            Box::new(crate::container::LaunchPlan::host(&spec).map_err(wire)?)
        } else {
            self.exec_plan(&key.container_id, &spec)?
        };
        let process = self
            .processes
            .spawn(key, launch, spec.terminal, program)
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

    /// Hands a process stream to a stream connection (once per stream).
    pub fn attach(&self, attach: &StreamAttach) -> Result<(Arc<Process>, StreamEnd), AgentError> {
        let process = self.processes.get(&attach.process).map_err(wire)?;
        let end = process.take_stream(attach.stream).map_err(wire)?;
        Ok((process, end))
    }
}
