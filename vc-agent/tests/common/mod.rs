//! A minimal vc-proto client for driving an in-process agent over
//! `tokio::io::duplex`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, DuplexStream, ReadHalf, WriteHalf};
use vc_agent::{Agent, AgentOptions};
use vc_proto::{
    handshake_client, AgentError, FrameKind, FrameReader, FrameWriter, Hello, ProcessRef,
    ProcessSpec, Request, Response, StreamAttach, StreamKind,
};

pub const BUFFER: usize = 64 * 1024;

/// An agent as a normal process, writing pod files into a temporary directory.
pub fn agent() -> (Arc<Agent>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::new(AgentOptions::process(dir.path())).expect("agent starts");
    (agent, dir)
}

pub struct Client {
    pub reader: FrameReader<ReadHalf<DuplexStream>>,
    pub writer: FrameWriter<WriteHalf<DuplexStream>>,
    pub version: u16,
    next_id: u64,
}

/// Opens a connection to `agent` and runs the handshake.
pub async fn connect(agent: &Arc<Agent>) -> Client {
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    tokio::spawn(vc_agent::serve_connection(Arc::clone(agent), theirs));
    let (read, write) = tokio::io::split(ours);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    let negotiated = handshake_client(&mut reader, &mut writer, &Hello::ours("test-host"))
        .await
        .expect("handshake");
    Client {
        reader,
        writer,
        version: negotiated.version,
        next_id: 1,
    }
}

impl Client {
    pub async fn send(&mut self, request: &Request) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.writer
            .write_message(FrameKind::Request, id, request)
            .await
            .expect("request written");
        id
    }

    pub async fn recv(&mut self) -> (u64, Response) {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.reader.read_message(FrameKind::Response),
        )
        .await
        .expect("a response within 20 s")
        .expect("response read")
    }

    pub async fn call(&mut self, request: Request) -> Response {
        let id = self.send(&request).await;
        let (got, response) = self.recv().await;
        assert_eq!(got, id, "response id");
        response
    }

    /// Starts `args` outside any container under `exec_id`.
    pub async fn exec(&mut self, exec_id: &str, args: &[&str], terminal: bool) -> Response {
        self.call(Request::Exec {
            process: host_process(exec_id),
            spec: ProcessSpec {
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
                cwd: "/".into(),
                terminal,
                ..ProcessSpec::default()
            },
        })
        .await
    }

    pub async fn wait(&mut self, exec_id: &str) -> i32 {
        match self
            .call(Request::Wait {
                process: host_process(exec_id),
            })
            .await
        {
            Response::Exited(code) => code,
            other => panic!("wait answered {other:?}"),
        }
    }
}

pub fn host_process(exec_id: &str) -> ProcessRef {
    ProcessRef {
        container_id: String::new(),
        exec_id: Some(exec_id.to_owned()),
    }
}

/// Opens a stream connection; the raw stream on success.
pub async fn attach(
    agent: &Arc<Agent>,
    process: ProcessRef,
    stream: StreamKind,
) -> Result<DuplexStream, AgentError> {
    let (ours, theirs) = tokio::io::duplex(BUFFER);
    let attach = StreamAttach { process, stream };
    open_stream(agent, (ours, theirs), FrameKind::StreamAttach, &attach).await
}

/// Serves `theirs` of a connection pair, sends `first` as a frame of `kind`
/// (a stream attach or park) on `ours`, and gives `ours` back carrying raw
/// bytes after the agent's `Ok`.
pub async fn open_stream<S: vc_agent::Connection, T: serde::Serialize>(
    agent: &Arc<Agent>,
    (ours, theirs): (S, S),
    kind: FrameKind,
    first: &T,
) -> Result<S, AgentError> {
    tokio::spawn(vc_agent::serve_connection(Arc::clone(agent), theirs));
    let (read, write) = tokio::io::split(ours);
    let mut reader = FrameReader::new(read);
    let mut writer = FrameWriter::new(write);
    handshake_client(&mut reader, &mut writer, &Hello::ours("test-host"))
        .await
        .expect("handshake");
    writer
        .write_message(kind, 0, first)
        .await
        .expect("first frame written");
    let (_, response) = reader
        .read_message::<Response>(FrameKind::Response)
        .await
        .expect("first frame answered");
    match response {
        Response::Ok => Ok(reader.into_inner().unsplit(writer.into_inner())),
        Response::Error(e) => Err(e),
        other => panic!("{kind:?} answered {other:?}"),
    }
}

/// Reads a stream to its end.
pub async fn read_all(mut stream: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("stream ends within 20 s")
        .expect("stream read");
    out
}
