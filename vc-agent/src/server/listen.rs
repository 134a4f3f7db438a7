//! Listeners: vsock in the guest, a unix socket for a normal process. Each
//! accepted connection is served on its own task, so any number are served at
//! once. A listener returns when the agent is asked to shut down.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::{serve_connection, Connection, ServeError};
use crate::agent::Agent;
use crate::power::error_chain;

static CONNECTIONS: AtomicU64 = AtomicU64::new(1);

fn spawn_connection<S>(agent: &Arc<Agent>, stream: S, peer: String)
where
    S: Connection,
{
    let conn = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", conn, %peer);
    let agent = Arc::clone(agent);
    tokio::spawn(
        async move {
            tracing::debug!("accepted");
            match serve_connection(agent, stream).await {
                Ok(()) => tracing::debug!("closed"),
                Err(e) => tracing::warn!("connection ended: {}", error_chain(&e)),
            }
        }
        .instrument(span),
    );
}

/// Accept errors such as EMFILE are transient: wait a little, go on.
async fn accept_failed(error: std::io::Error) {
    tracing::warn!("accept failed: {error}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves vc-proto on vsock `port` (any CID) until shutdown is requested.
pub async fn serve_vsock(agent: Arc<Agent>, port: u32) -> Result<(), ServeError> {
    let address = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
    let listener =
        tokio_vsock::VsockListener::bind(address).map_err(|source| ServeError::Bind {
            address: format!("vsock port {port}"),
            source,
        })?;
    tracing::info!(port, "listening on vsock");
    // Not through the log: the host waits for this exact line whatever the
    // log level is.
    {
        use std::io::Write as _;
        let mut console = std::io::stderr().lock();
        let _ = writeln!(console, "{}", vc_proto::AGENT_READY_LINE);
        let _ = console.flush();
    }
    agent.late_modules().start();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => spawn_connection(&agent, stream, peer.to_string()),
                Err(e) => accept_failed(e).await,
            },
            () = agent.shutdown_requested() => return Ok(()),
        }
    }
}

/// Serves vc-proto on a unix socket at `path` (replacing a stale socket file)
/// until shutdown is requested. For the agent as a normal process.
pub async fn serve_unix(agent: Arc<Agent>, path: &Path) -> Result<(), ServeError> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).map_err(|source| ServeError::Bind {
        address: path.display().to_string(),
        source,
    })?;
    tracing::info!(path = %path.display(), "listening on unix socket");
    agent.late_modules().start();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => spawn_connection(&agent, stream, "unix".to_owned()),
                Err(e) => accept_failed(e).await,
            },
            () = agent.shutdown_requested() => {
                let _ = std::fs::remove_file(path);
                return Ok(());
            }
        }
    }
}
