//! containerd's task API (`containerd.task.v2.Task`) over the service: each
//! RPC in a span naming its task, errors as ttrpc statuses.

use async_trait::async_trait;
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::TtrpcResult;
use tracing::{debug, info_span, warn, Instrument};

use super::{Service, ServiceError};

/// Logs a failed RPC and turns the result into ttrpc's.
fn reply<T>(rpc: &'static str, r: Result<T, ServiceError>) -> TtrpcResult<T> {
    r.map_err(|e| {
        warn!(rpc, error = %super::error::chain(&e), "request failed");
        e.into()
    })
}

fn empty(r: Result<(), ServiceError>) -> Result<Empty, ServiceError> {
    r.map(|()| Empty::default())
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let _span = info_span!("state", container_id = %req.id, exec_id = %req.exec_id).entered();
        reply("state", self.shared.state(req))
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let span = info_span!("create", container_id = %req.id);
        debug!(parent: &span, bundle = %req.bundle, mounts = req.rootfs.len(), terminal = req.terminal, "create");
        reply("create", self.shared.create(req).instrument(span).await)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let span = info_span!("start", container_id = %req.id, exec_id = %req.exec_id);
        reply("start", self.shared.start(req).instrument(span).await)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let span = info_span!("delete", container_id = %req.id, exec_id = %req.exec_id);
        reply("delete", self.shared.delete(req).instrument(span).await)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let span = info_span!("pids", container_id = %req.id);
        reply("pids", self.shared.pids(req).instrument(span).await)
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let span = info_span!("pause", container_id = %req.id);
        reply(
            "pause",
            empty(self.shared.pause(req).instrument(span).await),
        )
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let span = info_span!("resume", container_id = %req.id);
        reply(
            "resume",
            empty(self.shared.resume(req).instrument(span).await),
        )
    }

    async fn checkpoint(&self, _: &TtrpcContext, req: CheckpointTaskRequest) -> TtrpcResult<Empty> {
        let _span = info_span!("checkpoint", container_id = %req.id).entered();
        reply(
            "checkpoint",
            Err(ServiceError::Unsupported(
                "vc cannot checkpoint a task: its VM's vhost-user devices (vsock, virtio-fs) cannot be migrated or snapshotted",
            )),
        )
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let span = info_span!("kill", container_id = %req.id, exec_id = %req.exec_id);
        reply("kill", empty(self.shared.kill(req).instrument(span).await))
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let span = info_span!("exec", container_id = %req.id, exec_id = %req.exec_id);
        reply("exec", empty(self.shared.exec(req).instrument(span).await))
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let span = info_span!("resize_pty", container_id = %req.id, exec_id = %req.exec_id);
        reply(
            "resize_pty",
            empty(self.shared.resize_pty(req).instrument(span).await),
        )
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let _span =
            info_span!("close_io", container_id = %req.id, exec_id = %req.exec_id).entered();
        reply("close_io", empty(self.shared.close_io(req)))
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let span = info_span!("update", container_id = %req.id);
        reply(
            "update",
            empty(self.shared.update(req).instrument(span).await),
        )
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let span = info_span!("wait", container_id = %req.id, exec_id = %req.exec_id);
        reply("wait", self.shared.wait(req).instrument(span).await)
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let span = info_span!("stats", container_id = %req.id);
        reply("stats", self.shared.stats(req).instrument(span).await)
    }

    async fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let _span = info_span!("connect", container_id = %req.id).entered();
        reply("connect", self.shared.connect(req))
    }

    async fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        let span = info_span!("shutdown", container_id = %req.id);
        self.shared.shutdown().instrument(span).await;
        Ok(Empty::default())
    }
}
