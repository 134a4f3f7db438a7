//! The request loop of one connection.
//!
//! The reader (this task) reads frames in order and spawns one task per request,
//! so requests run concurrently and answer in any order. Every response goes
//! through one channel to one writer task, so frames never interleave. At most
//! [`MAX_IN_FLIGHT`] requests run at once per connection; past that the reader
//! waits, which pushes back on the host.
//!
//! Every request frame gets exactly one response frame with its id:
//! - a payload that does not decode as a [`Request`] (a newer host) is answered
//!   [`ErrorCode::Unsupported`] and the connection goes on;
//! - a frame of another kind is answered [`ErrorCode::InvalidArgument`];
//! - a response too large to send is replaced by an [`ErrorCode::Internal`] error.
//!
//! When the host closes its side, requests that only wait (`Wait`, `NextEvent`)
//! are cancelled, so that a gone host does not take events from the next one;
//! every other request runs to its end (an `Exec` half done would leave a
//! process nobody knows), and responses already made are still written.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tracing::Instrument;
use vc_proto::{
    AgentError, ErrorCode, Frame, FrameError, FrameKind, FrameReader, FrameWriter, Request,
    Response,
};

use super::ServeError;
use crate::agent::Agent;

/// Requests of one connection that may run at once.
pub const MAX_IN_FLIGHT: usize = 256;

struct Outgoing {
    id: u64,
    response: Response,
    /// Told once the response is written (used by `Shutdown`).
    written: Option<oneshot::Sender<()>>,
}

pub(super) async fn serve_requests<S>(
    agent: Arc<Agent>,
    version: u16,
    first: Frame,
    mut reader: FrameReader<ReadHalf<S>>,
    writer: FrameWriter<WriteHalf<S>>,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Outgoing>(MAX_IN_FLIGHT);
    let (gone_tx, gone) = watch::channel(false);
    let writer_task = tokio::spawn(write_responses(writer, rx, gone_tx.clone()));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut next = Some(first);
    let result = loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => match reader.read_frame().await {
                Ok(frame) => frame,
                Err(e) if e.is_clean_eof() => break Ok(()),
                Err(e) => break Err(e),
            },
        };
        let id = frame.header.id;
        let request = match decode_request(&frame) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(id, "refused frame: {}", error.message);
                let refused = Outgoing {
                    id,
                    response: Response::Error(error),
                    written: None,
                };
                if tx.send(refused).await.is_err() {
                    break Ok(());
                }
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            break Ok(());
        };
        let span = tracing::debug_span!("request", id, request = request.name());
        let task = RequestTask {
            agent: Arc::clone(&agent),
            version,
            id,
            tx: tx.clone(),
            gone: gone.clone(),
        };
        tokio::spawn(
            async move {
                task.run(request).await;
                drop(permit);
            }
            .instrument(span),
        );
    };
    // The host closed its side (or sent garbage): stop waiting requests, let the
    // rest finish, write what is queued.
    gone_tx.send_replace(true);
    drop(tx);
    let written = writer_task.await;
    result?;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => {
            tracing::warn!("response writer failed: {join}");
            Ok(())
        }
    }
}

fn decode_request(frame: &Frame) -> Result<Request, AgentError> {
    match frame.header.kind {
        FrameKind::Request => frame.decode::<Request>(FrameKind::Request).map_err(|_| {
            AgentError::new(
                ErrorCode::Unsupported,
                "this agent does not know the request (it may be newer than the agent)",
            )
        }),
        other => Err(AgentError::new(
            ErrorCode::InvalidArgument,
            format!("expected a request frame, got a {other:?} frame"),
        )),
    }
}

struct RequestTask {
    agent: Arc<Agent>,
    version: u16,
    id: u64,
    tx: mpsc::Sender<Outgoing>,
    gone: watch::Receiver<bool>,
}

impl RequestTask {
    async fn run(mut self, request: Request) {
        let verbose = self.agent.options().debug.requests;
        if verbose {
            tracing::info!(?request, "request");
        } else {
            tracing::debug!("request");
        }
        let waits = matches!(request, Request::Wait { .. } | Request::NextEvent);
        let shutdown = matches!(request, Request::Shutdown);
        let work = self.agent.handle(request, self.version);
        let response = if waits {
            tokio::select! {
                response = work => response,
                _ = self.gone.wait_for(|gone| *gone) => {
                    tracing::debug!("cancelled: the host closed the connection");
                    return;
                }
            }
        } else {
            work.await
        };
        match &response {
            Response::Error(e) => tracing::info!(code = ?e.code, "request failed: {}", e.message),
            other if verbose => tracing::info!(response = ?other, "response"),
            _ => tracing::debug!("answered"),
        }
        let (written, ack) = if shutdown {
            let (ack_tx, ack_rx) = oneshot::channel();
            (Some(ack_tx), Some(ack_rx))
        } else {
            (None, None)
        };
        let outgoing = Outgoing {
            id: self.id,
            response,
            written,
        };
        if self.tx.send(outgoing).await.is_err() {
            tracing::debug!("response dropped: the connection is gone");
        }
        if let Some(ack) = ack {
            // Power off only once the host has its answer (or cannot get it).
            let _ = ack.await;
            self.agent.request_shutdown();
        }
    }
}

async fn write_responses<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    gone: watch::Sender<bool>,
) -> Result<(), FrameError> {
    while let Some(out) = rx.recv().await {
        let written = match writer
            .write_message(FrameKind::Response, out.id, &out.response)
            .await
        {
            Err(FrameError::TooLargeToSend { length, max }) => {
                let error = AgentError::new(
                    ErrorCode::Internal,
                    format!(
                        "the response of {length} bytes exceeds the frame limit of {max} bytes"
                    ),
                );
                writer
                    .write_message(FrameKind::Response, out.id, &Response::Error(error))
                    .await
            }
            other => other,
        };
        if let Err(e) = written {
            gone.send_replace(true);
            return Err(e);
        }
        if let Some(ack) = out.written {
            let _ = ack.send(());
        }
    }
    let _ = writer.get_mut().shutdown().await;
    Ok(())
}
