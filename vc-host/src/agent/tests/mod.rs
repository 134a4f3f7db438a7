//! In-memory tests of the agent client against fake agents written here with
//! vc-proto's own framing, and against the real agent server in-process.

mod attach;
mod calls;
mod connect;
mod hostile;
pub(crate) mod real_agent;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use vc_proto::{handshake_server, FrameKind, FrameReader, FrameWriter, Hello, Request, Response};

use super::{AgentClient, ConnectOptions, Dialer};

/// Size of the in-memory pipes.
const PIPE: usize = 64 * 1024;

/// The agent's end of one connection, after the handshake.
pub(super) struct FakeAgent {
    pub reader: FrameReader<ReadHalf<DuplexStream>>,
    pub writer: FrameWriter<WriteHalf<DuplexStream>>,
}

impl FakeAgent {
    /// Runs the server side of the handshake on `stream`.
    pub async fn accept(stream: DuplexStream) -> Self {
        Self::accept_as(stream, &Hello::ours("fake-agent 0")).await
    }

    /// As [`accept`](Self::accept), announcing `hello` (an older agent's
    /// versions, say).
    pub async fn accept_as(stream: DuplexStream, hello: &Hello) -> Self {
        let (r, w) = tokio::io::split(stream);
        let mut reader = FrameReader::new(r);
        let mut writer = FrameWriter::new(w);
        handshake_server(&mut reader, &mut writer, hello)
            .await
            .expect("fake agent handshake");
        Self { reader, writer }
    }

    /// The next request, or `None` when the client closed the connection.
    pub async fn next_request(&mut self) -> Option<(u64, Request)> {
        match self
            .reader
            .read_message::<Request>(FrameKind::Request)
            .await
        {
            Ok(request) => Some(request),
            Err(e) if e.is_clean_eof() => None,
            Err(e) => panic!("fake agent read: {e}"),
        }
    }

    /// Answers request `id`.
    pub async fn respond(&mut self, id: u64, response: &Response) {
        self.writer
            .write_message(FrameKind::Response, id, response)
            .await
            .expect("fake agent write");
    }

    /// Writes raw bytes, bypassing the framing.
    pub async fn raw(&mut self, bytes: &[u8]) {
        let w = self.writer.get_mut();
        w.write_all(bytes).await.expect("raw write");
        w.flush().await.expect("raw flush");
    }
}

/// A client and the fake agent at the other end of an in-memory connection.
pub(super) async fn pair_with(
    opts: &ConnectOptions,
    dialer: Option<Arc<dyn Dialer>>,
) -> (AgentClient, FakeAgent) {
    let (host, guest) = tokio::io::duplex(PIPE);
    let (client, agent) = tokio::join!(
        AgentClient::from_stream_with(host, opts, dialer),
        FakeAgent::accept(guest)
    );
    (client.expect("client handshake"), agent)
}

/// [`pair_with`] with default options and no dialer.
pub(super) async fn pair() -> (AgentClient, FakeAgent) {
    pair_with(&ConnectOptions::default(), None).await
}

/// Serves the fake agent with `answer` until the client goes away: each
/// request gets `answer(request)`, or no answer at all for `None`.
pub(super) fn serve(
    mut agent: FakeAgent,
    answer: impl Fn(Request) -> Option<Response> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((id, request)) = agent.next_request().await {
            if let Some(response) = answer(request) {
                agent.respond(id, &response).await;
            }
        }
    })
}

/// A liveness probe the test switches off.
pub(super) fn switch() -> (Arc<AtomicBool>, impl Fn() -> bool + Send + Sync + 'static) {
    let alive = Arc::new(AtomicBool::new(true));
    let probe = {
        let alive = Arc::clone(&alive);
        move || alive.load(Ordering::SeqCst)
    };
    (alive, probe)
}

/// Fails the test when `fut` takes longer than `limit`.
pub(super) async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
}
