//! A parked output connection (protocol version 3): after the `StreamPark`
//! frame the agent takes a slot for it, answers `Ok`, detaches the socket from
//! the async runtime and parks it until an `ExecDirect` hands it to the
//! process as its stdout or stderr (or its timeout passes and it is closed).
//! From then on the agent does not touch the connection: the process writes
//! into it, and its last close is the end of the stream.

use std::sync::Arc;

use tokio::io::{AsyncWrite, ReadHalf, WriteHalf};
use vc_proto::{
    AgentError, ErrorCode, Frame, FrameKind, FrameReader, FrameWriter, Response, StreamPark,
};

use super::{Connection, ServeError};
use crate::agent::Agent;

pub(super) async fn park_stream<S: Connection>(
    agent: Arc<Agent>,
    frame: Frame,
    reader: FrameReader<ReadHalf<S>>,
    mut writer: FrameWriter<WriteHalf<S>>,
) -> Result<(), ServeError> {
    let id = frame.header.id;
    let reserved = frame
        .decode::<StreamPark>(FrameKind::StreamPark)
        .map_err(|_| {
            AgentError::new(
                ErrorCode::Unsupported,
                "this agent cannot decode the stream park request",
            )
        })
        .and_then(|park| {
            if !S::HANDOFF {
                // An in-memory connection (tests) has no socket to hand
                // over; refused before any `Ok`, so the host uses pipes.
                return Err(AgentError::new(
                    ErrorCode::Unsupported,
                    "this connection is not a socket and cannot be handed to a process",
                ));
            }
            let reservation = agent.reserve_park(&park)?;
            Ok((park, reservation))
        });
    let (park, reservation) = match reserved {
        Ok(reserved) => reserved,
        Err(error) => {
            tracing::info!("stream park refused: {}", error.message);
            writer
                .write_message(FrameKind::Response, id, &Response::Error(error))
                .await?;
            return Ok(());
        }
    };
    ok(&mut writer, id).await?;
    // The frame reader read exactly the frame's bytes: nothing of the
    // connection is buffered in the agent.
    let stream = reader.into_inner().unsplit(writer.into_inner());
    match stream.into_fd().map_err(ServeError::Stream)? {
        Some(socket) => {
            tracing::debug!(
                container_id = %park.process.container_id,
                exec_id = ?park.process.exec_id,
                stream = ?park.stream,
                timeout_ms = park.timeout_ms,
                "stream parked"
            );
            agent.fill_park(reservation, socket, &park);
        }
        None => tracing::warn!("a socket connection gave no descriptor; park dropped"),
    }
    Ok(())
}

async fn ok<W: AsyncWrite + Unpin>(writer: &mut FrameWriter<W>, id: u64) -> Result<(), ServeError> {
    writer
        .write_message(FrameKind::Response, id, &Response::Ok)
        .await?;
    Ok(())
}
