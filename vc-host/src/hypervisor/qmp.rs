//! QMP over the monitor's Unix socket, with the `qapi` crate's typed commands.
//!
//! Each call opens a connection, negotiates capabilities, runs one command
//! and closes, all under one timeout. QEMU serves one monitor client at a
//! time; concurrent callers queue on the socket's backlog.

use std::path::{Path, PathBuf};
use std::time::Duration;

use qapi::futures::{QapiStream, QmpStreamTokio};
use qapi::qmp;
use thiserror::Error;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::scm::{FdSender, FdStream};

pub(super) type Stream =
    QapiStream<QmpStreamTokio<ReadHalf<FdStream>>, QmpStreamTokio<WriteHalf<FdStream>>>;

/// Why a QMP command failed.
#[derive(Debug, Error)]
pub enum QmpError {
    /// The monitor socket could not be reached or the greeting was bad.
    #[error("cannot open QMP monitor {socket}")]
    Connect {
        /// Monitor socket.
        socket: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// QEMU answered with an error, or the connection broke.
    #[error("QMP command {command} failed")]
    Command {
        /// Command name.
        command: &'static str,
        /// QEMU's error or the I/O error.
        #[source]
        source: qapi::ExecuteError,
    },
    /// A disk image to hot-plug could not be opened.
    #[error("cannot open disk image {path} for QEMU")]
    Image {
        /// The image.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Every hotplug port of the VM holds a device.
    #[error("all {ports} hotplug ports of the VM are in use")]
    NoFreePort {
        /// How many there are.
        ports: u32,
    },
    /// No answer in time.
    #[error("QMP command {command} got no answer within {timeout:?}")]
    Timeout {
        /// Command name.
        command: &'static str,
        /// The limit.
        timeout: Duration,
    },
}

/// QEMU's run state as reported by `query-status`, reduced to what callers
/// act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// vCPUs run.
    Running,
    /// Stopped by `stop` (or a debugger).
    Paused,
    /// The guest shut down or panicked (QEMU is about to exit with
    /// `-no-reboot`).
    Shutdown,
    /// Any other QEMU state, by its QAPI name.
    Other(String),
}

impl From<qmp::RunState> for RunState {
    fn from(s: qmp::RunState) -> Self {
        match s {
            qmp::RunState::running => RunState::Running,
            qmp::RunState::paused => RunState::Paused,
            qmp::RunState::shutdown | qmp::RunState::guest_panicked => RunState::Shutdown,
            other => RunState::Other(
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| format!("{other:?}")),
            ),
        }
    }
}

/// A QMP monitor socket.
#[derive(Debug, Clone)]
pub struct Qmp {
    socket: PathBuf,
}

impl Qmp {
    /// The monitor at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Qmp {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub(super) async fn open(&self) -> Result<Stream, QmpError> {
        Ok(self.open_passing().await?.0)
    }

    /// A negotiated connection, and the handle that attaches descriptors
    /// to its next command (for `add-fd`).
    pub(super) async fn open_passing(&self) -> Result<(Stream, FdSender), QmpError> {
        let connect = |source| QmpError::Connect {
            socket: self.socket.clone(),
            source,
        };
        let socket = UnixStream::connect(&self.socket).await.map_err(connect)?;
        let (socket, sender) = FdStream::new(socket);
        let negotiation = QmpStreamTokio::open(socket).await.map_err(connect)?;
        let stream = negotiation.negotiate().await.map_err(connect)?;
        Ok((stream, sender))
    }

    async fn run<C>(
        &self,
        name: &'static str,
        command: C,
        timeout: Duration,
    ) -> Result<C::Ok, QmpError>
    where
        C: qmp::QmpCommand + qapi::Command,
    {
        let call = async {
            let mut stream = self.open().await?;
            stream
                .execute(command)
                .await
                .map_err(|source| QmpError::Command {
                    command: name,
                    source,
                })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| QmpError::Timeout {
                command: name,
                timeout,
            })?
    }

    /// `query-status`.
    pub async fn query_status(&self, timeout: Duration) -> Result<RunState, QmpError> {
        let info = self
            .run("query-status", qmp::query_status {}, timeout)
            .await?;
        Ok(info.status.into())
    }

    /// `stop`: pause the vCPUs.
    pub async fn stop(&self, timeout: Duration) -> Result<(), QmpError> {
        self.run("stop", qmp::stop {}, timeout).await.map(drop)
    }

    /// `cont`: resume the vCPUs.
    pub async fn cont(&self, timeout: Duration) -> Result<(), QmpError> {
        self.run("cont", qmp::cont {}, timeout).await.map(drop)
    }

    /// `quit`: QEMU exits. A connection closed before the answer counts as
    /// success, since QEMU may exit before flushing it.
    pub async fn quit(&self, timeout: Duration) -> Result<(), QmpError> {
        match self.run("quit", qmp::quit {}, timeout).await {
            Ok(_) => Ok(()),
            Err(QmpError::Command {
                source: qapi::ExecuteError::Io(e),
                ..
            }) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake monitor: greets, accepts capabilities, then answers each
    /// command line with the next canned reply (or stays silent when none).
    async fn fake_qmp(replies: Vec<&'static str>) -> (tempfile::TempDir, Qmp) {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(
                br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}
"#,
            )
            .await
            .expect("greet");
            let _caps = lines.next_line().await.expect("caps");
            w.write_all(b"{\"return\": {}}\n").await.expect("caps ok");
            for reply in replies {
                let _cmd = lines.next_line().await.expect("cmd");
                w.write_all(reply.as_bytes()).await.expect("reply");
            }
            // Then read on without answering until the client goes away.
            while let Ok(Some(_)) = lines.next_line().await {}
            drop(w);
        });
        (dir, Qmp::new(socket))
    }

    #[tokio::test]
    async fn query_status_is_typed() {
        let (_d, qmp) = fake_qmp(vec![
            "{\"return\": {\"status\": \"paused\", \"singlestep\": false, \"running\": false}}\n",
        ])
        .await;
        let state = qmp
            .query_status(Duration::from_secs(5))
            .await
            .expect("status");
        assert_eq!(state, RunState::Paused);
    }

    #[tokio::test]
    async fn qemu_errors_are_command_errors() {
        let (_d, qmp) = fake_qmp(vec![
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        ])
        .await;
        let err = qmp.cont(Duration::from_secs(5)).await.expect_err("error");
        assert!(
            matches!(
                err,
                QmpError::Command {
                    command: "cont",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn silence_is_a_timeout() {
        let (_d, qmp) = fake_qmp(vec![]).await;
        let err = qmp
            .stop(Duration::from_millis(200))
            .await
            .expect_err("timeout");
        assert!(
            matches!(
                err,
                QmpError::Timeout {
                    command: "stop",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let qmp = Qmp::new("/nonexistent/vc/qmp.sock");
        let err = qmp
            .query_status(Duration::from_secs(1))
            .await
            .expect_err("no socket");
        assert!(matches!(err, QmpError::Connect { .. }), "{err:?}");
    }
}
