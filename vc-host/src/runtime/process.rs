//! Processes of containers: a container's main process and every process
//! started in it with `exec`, as one handle type, [`Process`].
//!
//! A handle owns the process's byte streams, one vsock connection each: stdout
//! and stderr as separate [`AsyncRead`](tokio::io::AsyncRead)s, stdin as an
//! [`AsyncWrite`](tokio::io::AsyncWrite) whose shutdown is end-of-file for the
//! process; a process with a terminal has one stream each way instead
//! ([`Process::tty`]) and can be resized. Bytes never pass through request
//! frames, so a slow reader slows only its own process (the process blocks
//! on a full connection, or on a full pipe the agent stops reading) and
//! memory stays flat on both sides. Where the agent speaks protocol version 3,
//! stdout and stderr are the connections themselves, handed to the process
//! at its start ([`StdioPath`]). After the process exits, every byte it wrote is delivered before
//! end-of-file.
//!
//! When the VM or its agent dies, [`Process::wait`] ends with
//! [`ProcessError::VmGone`], whose [`exit_code`](ProcessError::exit_code) is
//! [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE) (255).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{debug, info, info_span, warn, Instrument};
use vc_proto::{ErrorCode, ProcessRef, ProcessSpec, StreamKind};

use super::pod::{connect_agent, unique_exec_id, CONNECT_DEADLINE};
use super::{Runtime, RuntimeError};
use crate::agent::{
    park_unsupported, AgentClient, AgentClientError, Output, ProcessIo, ProcessOutput,
    ProcessStdin, ProcessTty,
};
use crate::config::{ContainerConfig, UserConfig, DEFAULT_PATH};
use crate::id::{ContainerId, PodId};
use crate::state::State;
use crate::store::CallLease;

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;

/// Appends `extra` to `env`, each `KEY=VALUE` replacing an entry of `env`
/// with the same key (an exec's environment overrides its container's).
pub(crate) fn merge_env(env: &mut Vec<String>, extra: Vec<String>) {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_owned();
    for kv in extra {
        let k = key(&kv);
        env.retain(|e| key(e) != k);
        env.push(kv);
    }
}

/// The most bytes [`Process::output`] keeps of each stream by default.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024 * 1024;

/// What to run with [`Runtime::exec_process`]. Fields left unset take the
/// container's own value (its environment is extended by `env`; a variable
/// `env` names replaces the container's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Program and arguments; `args[0]` is looked up in `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// More environment, `KEY=VALUE`, after the container's; a key the
    /// container has gets this value instead.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub cwd: Option<String>,
    /// User and groups (default: the container's).
    pub user: Option<UserConfig>,
    /// A pseudo-terminal: one stream each way, resizable.
    pub terminal: bool,
    /// Attach stdin. Without it the process reads end-of-file at once
    /// (terminal processes always get their input stream).
    pub stdin: bool,
    /// Use the agent's pipes for stdout and stderr even when the agent could
    /// give the process its stream connections directly
    /// ([`StdioPath::Pipes`]); for tests and measurements of that path.
    pub pipes: bool,
}

/// How a process's stdout and stderr reach the host (not with a terminal,
/// which always goes through the agent's pty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdioPath {
    /// The stream connections themselves as the process's stdout and stderr
    /// (parked before the exec, protocol version 3), when the agent speaks
    /// version 3 over a socket; otherwise the pipes.
    #[default]
    Direct,
    /// The agent's pipes, copied into connections attached after the exec
    /// (the only path of a version-2 agent).
    Pipes,
}

/// How an exec's environment combines with its container's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecEnv {
    /// The container's environment, each variable the exec names replaced
    /// (virtc, the library's default).
    Extend,
    /// The exec's environment alone when it has one (an OCI exec process
    /// carries its whole environment: containerd copies the container's and
    /// changes what it is told to); `PATH` gets the default when missing.
    Replace,
}

impl ProcessConfig {
    /// A process running `args` with the container's settings, no terminal, no stdin.
    pub fn new<S: Into<String>>(args: impl IntoIterator<Item = S>) -> Self {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The agent's process spec for this exec in `container`: the
    /// container's settings with this config's on top, its environment
    /// combined as `env` says.
    pub fn exec_spec(self, container: &ContainerConfig, env: ExecEnv) -> ProcessSpec {
        let mut spec = container.process_spec();
        spec.args = self.args;
        match env {
            ExecEnv::Extend => merge_env(&mut spec.env, self.env),
            ExecEnv::Replace if self.env.is_empty() => {}
            ExecEnv::Replace => {
                spec.env = self.env;
                if !spec.env.iter().any(|e| e.starts_with("PATH=")) {
                    spec.env.insert(0, DEFAULT_PATH.to_owned());
                }
            }
        }
        if let Some(cwd) = self.cwd {
            spec.cwd = cwd;
        }
        if let Some(user) = self.user {
            spec.user = vc_proto::User {
                uid: user.uid,
                gid: user.gid,
                additional_gids: user.additional_gids,
            };
        }
        spec.terminal = self.terminal;
        spec
    }

    /// With a pseudo-terminal.
    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }

    /// With stdin attached.
    pub fn stdin(mut self, stdin: bool) -> Self {
        self.stdin = stdin;
        self
    }

    /// With stdout and stderr through the agent's pipes (see [`StdioPath`]).
    pub fn pipes(mut self, pipes: bool) -> Self {
        self.pipes = pipes;
        self
    }

    /// With one more environment variable.
    pub fn env(mut self, kv: impl Into<String>) -> Self {
        self.env.push(kv.into());
        self
    }

    /// In this working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// As this user.
    pub fn user(mut self, user: UserConfig) -> Self {
        self.user = Some(user);
        self
    }
}

/// Why a process operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The pod's VM or its agent went away. The process's exit code is
    /// [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE).
    #[error("the VM or agent of process {process} is gone (exit code 255)")]
    VmGone {
        /// The process.
        process: String,
        /// How it was noticed.
        #[source]
        source: AgentClientError,
    },
    /// The program is missing or not executable; nothing was started.
    #[error("cannot execute {program:?} in {process}")]
    ExecFailed {
        /// The program (`args[0]`).
        program: String,
        /// The process that was to run it.
        process: String,
        /// The agent's answer (it names the errno).
        #[source]
        source: AgentClientError,
    },
    /// The container is not running.
    #[error("container {container} is {state}; {operation} needs it running")]
    ContainerNotRunning {
        /// The container.
        container: String,
        /// Its state.
        state: State,
        /// The operation.
        operation: &'static str,
    },
    /// The process has no arguments.
    #[error("process {process} has no arguments: args[0] names the program")]
    NoProgram {
        /// The process.
        process: String,
    },
    /// An agent request about the process failed.
    #[error("{operation} of process {process} failed")]
    Agent {
        /// What was asked.
        operation: &'static str,
        /// The process.
        process: String,
        /// The agent client's error.
        #[source]
        source: AgentClientError,
    },
    /// Reading one of the process's output streams failed.
    #[error("reading the {stream:?} stream of process {process} failed")]
    Read {
        /// The stream.
        stream: StreamKind,
        /// The process.
        process: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An output stream passed the limit given to [`Process::output_limited`].
    #[error("the {stream:?} stream of process {process} passed {limit} bytes")]
    OutputTooLarge {
        /// The stream.
        stream: StreamKind,
        /// The process.
        process: String,
        /// The limit.
        limit: usize,
    },
}

impl ProcessError {
    fn from_agent(operation: &'static str, process: &str, source: AgentClientError) -> Self {
        let process = process.to_owned();
        if source.agent_gone() {
            ProcessError::VmGone { process, source }
        } else {
            ProcessError::Agent {
                operation,
                process,
                source,
            }
        }
    }

    /// True when the VM or its agent is gone.
    pub fn vm_gone(&self) -> bool {
        matches!(self, ProcessError::VmGone { .. })
    }

    /// The exit code to report for a process whose wait failed with this
    /// error: 255 when the VM or agent is gone, `None` otherwise.
    pub fn exit_code(&self) -> Option<i32> {
        self.vm_gone().then_some(vc_proto::EXIT_CODE_VM_GONE)
    }
}

impl RuntimeError {
    /// The exit code to report for a process whose wait failed with this
    /// error: [`EXIT_CODE_VM_GONE`](vc_proto::EXIT_CODE_VM_GONE) when the VM
    /// or agent went away, `None` for every other error.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            RuntimeError::Agent(e) => e.exit_code(),
            RuntimeError::Process(e) => e.exit_code(),
            RuntimeError::HelperDied { .. } => Some(vc_proto::EXIT_CODE_VM_GONE),
            _ => None,
        }
    }
}

/// A running (or exited) process in a pod's guest and its attached streams.
///
/// The stream fields are public so that callers can take them apart (as with
/// `std::process::Child`). The streams do not watch the VM: a caller that
/// reads them directly bounds the read by [`Process::closed`].
#[derive(Debug)]
pub struct Process {
    agent: AgentClient,
    reference: ProcessRef,
    name: String,
    terminal: bool,
    /// Writer to the process's stdin; shutting it down is end-of-file.
    pub stdin: Option<ProcessStdin>,
    /// The process's stdout (not with a terminal).
    pub stdout: Option<ProcessOutput>,
    /// The process's stderr (not with a terminal).
    pub stderr: Option<ProcessOutput>,
    /// The terminal, both ways (terminal processes only).
    pub tty: Option<ProcessTty>,
}

impl Process {
    /// Starts `spec` as `reference` through `agent` with its streams: the
    /// terminal, or stdout and stderr (and stdin when `stdin` is set;
    /// otherwise stdin is closed at once, so the process reads end-of-file).
    /// stdout and stderr take [`StdioPath::Direct`].
    ///
    /// A missing or non-executable program is [`ProcessError::ExecFailed`], at
    /// once. This is the building block of [`Runtime::exec_process`]; callers
    /// that start many processes reuse one agent client with it.
    pub async fn spawn(
        agent: &AgentClient,
        reference: ProcessRef,
        spec: ProcessSpec,
        stdin: bool,
    ) -> Result<Self, ProcessError> {
        Self::spawn_with(agent, reference, spec, stdin, StdioPath::Direct).await
    }

    /// As [`spawn`](Self::spawn), with stdout and stderr taking `path`.
    ///
    /// The direct path parks the stdout and stderr connections first, then
    /// sends `ExecDirect`, then attaches stdin (or closes it): nothing the
    /// process writes can be lost, since its output connections exist before
    /// it does. The pipe path sends `Exec` and attaches afterwards; output
    /// written before the attach waits in the agent's pipes.
    pub async fn spawn_with(
        agent: &AgentClient,
        reference: ProcessRef,
        spec: ProcessSpec,
        stdin: bool,
        path: StdioPath,
    ) -> Result<Self, ProcessError> {
        let name = process_name(&reference);
        let Some(program) = spec.args.first().cloned() else {
            return Err(ProcessError::NoProgram { process: name });
        };
        let terminal = spec.terminal;
        let parked = if !terminal && path == StdioPath::Direct && agent.direct_streams() {
            match agent.park_output(&reference).await {
                Ok(io) => Some(io),
                Err(e) if park_unsupported(&e) => {
                    debug!(process = %name, error = %e, "the agent cannot park streams here; pipes");
                    None
                }
                Err(e) => return Err(ProcessError::from_agent("park", &name, e)),
            }
        } else {
            None
        };
        let started = match parked {
            Some(_) => {
                let streams = vec![StreamKind::Stdout, StreamKind::Stderr];
                agent.exec_direct(&reference, spec, streams).await
            }
            None => agent.exec(&reference, spec).await,
        };
        match started {
            Ok(pid) => debug!(process = %name, pid, direct = parked.is_some(), "process started"),
            Err(AgentClientError::Agent { request, source })
                if source.code == ErrorCode::ExecFailed =>
            {
                return Err(ProcessError::ExecFailed {
                    program,
                    process: name,
                    source: AgentClientError::Agent { request, source },
                });
            }
            Err(e) => return Err(ProcessError::from_agent("exec", &name, e)),
        }
        let attached = match parked {
            Some(io) => Self::attach_stdin(agent, reference.clone(), io, stdin).await,
            None => Self::attach(agent, reference.clone(), terminal, stdin).await,
        };
        match attached {
            Ok(process) => Ok(process),
            Err(e) => {
                // Nobody can reach the process's streams: do not leave it running.
                if let Err(kill) = agent.signal(&reference, libc::SIGKILL, false).await {
                    warn!(process = %name, error = %kill, "cannot kill a process whose streams failed");
                }
                Err(e)
            }
        }
    }

    /// The direct path after the exec: stdout and stderr are the parked
    /// connections in `io`; stdin is attached, or closed without `stdin`.
    async fn attach_stdin(
        agent: &AgentClient,
        reference: ProcessRef,
        io: ProcessIo,
        stdin: bool,
    ) -> Result<Self, ProcessError> {
        let name = process_name(&reference);
        let stdin = if stdin {
            let attached = agent.attach_stdin(&reference).await;
            Some(attached.map_err(|e| ProcessError::from_agent("attach", &name, e))?)
        } else {
            agent
                .close_stdin(&reference)
                .await
                .map_err(|e| ProcessError::from_agent("close-stdin", &name, e))?;
            None
        };
        Ok(Self {
            agent: agent.clone(),
            reference,
            name,
            terminal: false,
            stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            tty: None,
        })
    }

    /// Attaches the streams of an existing process. Each stream of a process
    /// attaches once: a second attach is refused by the agent.
    pub async fn attach(
        agent: &AgentClient,
        reference: ProcessRef,
        terminal: bool,
        stdin: bool,
    ) -> Result<Self, ProcessError> {
        let name = process_name(&reference);
        let io = agent
            .attach_process(&reference, terminal, stdin && !terminal)
            .await
            .map_err(|e| ProcessError::from_agent("attach", &name, e))?;
        if !terminal && !stdin {
            // Without an attached stdin the process reads end-of-file.
            agent
                .close_stdin(&reference)
                .await
                .map_err(|e| ProcessError::from_agent("close-stdin", &name, e))?;
        }
        Ok(Self {
            agent: agent.clone(),
            reference,
            name,
            terminal,
            stdin: io.stdin,
            stdout: io.stdout,
            stderr: io.stderr,
            tty: io.tty,
        })
    }

    /// The process as the agent knows it.
    pub fn reference(&self) -> &ProcessRef {
        &self.reference
    }

    /// The agent connection the handle uses.
    pub fn agent(&self) -> &AgentClient {
        &self.agent
    }

    /// Whether the process has a terminal.
    pub fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Waits for the process to exit: its exit status, or 128 + signal.
    /// When the VM or agent dies first: [`ProcessError::VmGone`] (code 255).
    pub async fn wait(&self) -> Result<i32, ProcessError> {
        let code = self
            .agent
            .wait(&self.reference)
            .await
            .map_err(|e| ProcessError::from_agent("wait", &self.name, e))?;
        info!(process = %self.name, code, "process exited");
        Ok(code)
    }

    /// Sends `signal` to the process (not an error once it has exited).
    pub async fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        self.agent
            .signal(&self.reference, signal, false)
            .await
            .map_err(|e| ProcessError::from_agent("signal", &self.name, e))
    }

    /// Sets the terminal's size (terminal processes only).
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ProcessError> {
        self.agent
            .resize_terminal(&self.reference, rows, cols)
            .await
            .map_err(|e| ProcessError::from_agent("resize", &self.name, e))
    }

    /// Closes the process's stdin from the agent's side (end-of-file), as
    /// shutting down [`Process::stdin`] does.
    pub async fn close_stdin(&self) -> Result<(), ProcessError> {
        self.agent
            .close_stdin(&self.reference)
            .await
            .map_err(|e| ProcessError::from_agent("close-stdin", &self.name, e))
    }

    /// Resolves when the control connection is down (VM or agent gone, or
    /// the connection lost), with the error a pending wait would get.
    pub async fn closed(&self) -> ProcessError {
        let cause = self.agent.closed().await;
        ProcessError::from_agent("stream", &self.name, cause.for_request("stream"))
    }

    /// Reads stdout and stderr (or the terminal, as stdout) to end-of-file
    /// and waits for the exit code, at most [`DEFAULT_OUTPUT_LIMIT`] bytes
    /// per stream. stdin, if attached and not taken, is closed first.
    pub async fn output(self) -> Result<Output, ProcessError> {
        self.output_limited(DEFAULT_OUTPUT_LIMIT).await
    }

    /// As [`output`](Self::output), with at most `limit` bytes per stream.
    pub async fn output_limited(mut self, limit: usize) -> Result<Output, ProcessError> {
        drop(self.stdin.take());
        let stdout: Option<Box<dyn AsyncRead + Unpin + Send>> =
            match (self.tty.take(), self.stdout.take()) {
                (Some(tty), _) => Some(Box::new(tty)),
                (None, Some(out)) => Some(Box::new(out)),
                (None, None) => None,
            };
        let stderr = self.stderr.take();
        let name = self.name.clone();
        let read = |stream: Option<Box<dyn AsyncRead + Unpin + Send>>, kind: StreamKind| {
            let name = name.clone();
            async move {
                let mut bytes = Vec::new();
                if let Some(stream) = stream {
                    read_bounded(stream, &mut bytes, limit)
                        .await
                        .map_err(|source| ProcessError::Read {
                            stream: kind,
                            process: name.clone(),
                            source,
                        })?;
                    if bytes.len() > limit {
                        return Err(ProcessError::OutputTooLarge {
                            stream: kind,
                            process: name,
                            limit,
                        });
                    }
                }
                Ok(bytes)
            }
        };
        let stdout_kind = if self.terminal {
            StreamKind::Tty
        } else {
            StreamKind::Stdout
        };
        let collect = async {
            tokio::try_join!(
                read(stdout, stdout_kind),
                read(
                    stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>),
                    StreamKind::Stderr
                ),
                self.wait(),
            )
        };
        let (stdout, stderr, exit_code) = tokio::select! {
            out = collect => out?,
            gone = self.closed() => return Err(gone),
        };
        Ok(Output {
            stdout,
            stderr,
            exit_code,
        })
    }
}

/// Reads `stream` to end-of-file into `out`, stopping once `out` holds more
/// than `limit` bytes.
async fn read_bounded(
    mut stream: impl AsyncRead + Unpin,
    out: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > limit {
            return Ok(());
        }
    }
}

/// `container/exec` or `container` for logs and errors.
fn process_name(p: &ProcessRef) -> String {
    let container = if p.container_id.is_empty() {
        "(pod)"
    } else {
        p.container_id.as_str()
    };
    match &p.exec_id {
        Some(exec) => format!("{container}/{exec}"),
        None => container.to_owned(),
    }
}

/// How long [`Runtime::exec_process`] waits for the agent of a running pod.
const EXEC_CONNECT_DEADLINE: Duration = CONNECT_DEADLINE;

impl Runtime {
    /// An agent connection to a running pod whose container `id` is running,
    /// that container's main-process spec, and the lease that keeps a pause
    /// from freezing the VM until the caller's call is answered (hold it that
    /// long, and no longer: see [`crate::store::CallLease`]).
    async fn running_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        operation: &'static str,
    ) -> Result<(AgentClient, crate::config::ContainerConfig, CallLease), RuntimeError> {
        let pod = self.lock(pod_id).await?;
        let c = pod
            .record
            .containers
            .get(id)
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                pod: pod_id.clone(),
                container: id.clone(),
            })?;
        if !matches!(c.state, State::Running | State::Paused) {
            return Err(ProcessError::ContainerNotRunning {
                container: id.to_string(),
                state: c.state,
                operation,
            }
            .into());
        }
        let config = c.config.clone();
        let vm = self.running_vm(&pod, operation)?;
        let lease = pod.dir.call_lease().await?;
        drop(pod);
        let agent = connect_agent(&vm, EXEC_CONNECT_DEADLINE).await?;
        Ok((agent, config, lease))
    }

    /// Starts one more process in a running container (EnterContainer) and
    /// attaches its streams. Settings `config` leaves unset are the
    /// container's. A missing or non-executable program fails at once with
    /// [`ProcessError::ExecFailed`] naming it.
    pub async fn exec_process(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        config: ProcessConfig,
    ) -> Result<Process, RuntimeError> {
        let span = info_span!("exec", pod_id = %pod_id, container_id = %id);
        async move {
            // The lease lasts until the process is spawned and attached.
            let (agent, container, _lease) = self.running_container(pod_id, id, "exec").await?;
            let stdin = config.stdin;
            let path = if config.pipes {
                StdioPath::Pipes
            } else {
                StdioPath::Direct
            };
            let spec = config.exec_spec(&container, ExecEnv::Extend);
            let reference = ProcessRef {
                container_id: id.to_string(),
                exec_id: Some(unique_exec_id()),
            };
            let process = Process::spawn_with(&agent, reference, spec, stdin, path).await?;
            crate::fault::point("exec.spawned");
            info!(process = %process.name, "exec started");
            Ok(process)
        }
        .instrument(span)
        .await
    }

    /// Attaches to the streams of a running container's main process (a
    /// terminal when the container has one; stdin only with `stdin`, and
    /// without it the process's stdin is closed: it reads end-of-file). Each
    /// stream attaches once per process lifetime; waiting works any number of
    /// times, from any process.
    pub async fn attach_container(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        stdin: bool,
    ) -> Result<Process, RuntimeError> {
        let (agent, container, _lease) = self.running_container(pod_id, id, "attach").await?;
        let reference = ProcessRef {
            container_id: id.to_string(),
            exec_id: None,
        };
        Ok(Process::attach(&agent, reference, container.terminal, stdin).await?)
    }

    /// Sends `signal` to a process of a running container: the main process
    /// (`exec_id` `None`) or an exec'd one; with `all`, every process of the
    /// container.
    pub async fn signal_process(
        &self,
        pod_id: &PodId,
        id: &ContainerId,
        exec_id: Option<&str>,
        signal: i32,
        all: bool,
    ) -> Result<(), RuntimeError> {
        let (agent, _, _lease) = self.running_container(pod_id, id, "signal").await?;
        let reference = ProcessRef {
            container_id: id.to_string(),
            exec_id: exec_id.map(str::to_owned),
        };
        agent
            .signal(&reference, signal, all)
            .await
            .map_err(|e| ProcessError::from_agent("signal", &process_name(&reference), e))?;
        info!(pod_id = %pod_id, container_id = %id, exec_id, signal, all, "process signalled");
        Ok(())
    }
}
