//! `containerd-shim-vc-v2 delete`: containerd's cleanup after a shim died
//! (killed, crashed) or failed to start. It runs in the task's bundle
//! directory with the task's id and namespace, and must leave nothing
//! behind: the pod's VM is stopped and its vc state removed when the task
//! made the pod; a container of a sandbox's pod is removed from the pod when
//! the VM still runs (best effort: the sandbox's own cleanup removes the
//! whole pod); the rootfs mount goes. It answers exit status 137, as
//! containerd expects for a task whose shim died.

use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_shim::api::DeleteResponse;
use tracing::{info, warn};
use vc_host::Runtime;

use crate::bundle;
use crate::config::{Env, ShimConfig};
use crate::group::{self, Role};
use crate::rootfs;

/// The status a task whose shim died exits with (SIGKILL), as containerd's
/// own shims report it.
pub const DEAD_SHIM_EXIT: u32 = 137;

/// Cleans up after the task `id` of `bundle_dir`. Never fails: whatever
/// cannot be undone is logged, and containerd gets its answer.
pub async fn delete(id: &str, bundle_dir: &Path) -> DeleteResponse {
    let role = match bundle::role(bundle_dir) {
        Ok(role) => role,
        Err(e) => {
            warn!(error = %e, "cannot read the bundle; treating the task as a pod of its own");
            Role::Standalone
        }
    };
    match ShimConfig::load(&Env::from_process()) {
        Ok(config) => remove(id, &role, config).await,
        Err(e) => warn!(error = %e, "cannot load the shim settings; the pod cannot be removed"),
    }
    let dir = bundle_dir.to_path_buf();
    match tokio::task::spawn_blocking(move || rootfs::unmount(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot unmount the rootfs"),
        Err(e) => warn!(error = %e, "the unmount task failed"),
    }
    info!(container_id = %id, "cleaned up after the shim");
    let mut response = DeleteResponse::new();
    response.exit_status = DEAD_SHIM_EXIT;
    response.exited_at = Some(crate::service::timestamp(SystemTime::now())).into();
    response
}

async fn remove(id: &str, role: &Role, config: ShimConfig) {
    let deadline = Duration::from_secs(config.timeouts.stop_secs);
    let runtime = match Runtime::new(config.runtime) {
        Ok(rt) => rt,
        Err(e) => {
            warn!(error = %e, "cannot open the vc runtime root");
            return;
        }
    };
    let pod = match group::pod_id(role.group(id)) {
        Ok(pod) => pod,
        Err(e) => {
            warn!(error = %e, "no vc pod can have this id");
            return;
        }
    };
    if role.owns_pod() {
        match tokio::time::timeout(deadline, runtime.force_delete_pod(&pod)).await {
            Ok(Ok(())) => info!(pod_id = %pod, "pod removed"),
            Ok(Err(vc_host::RuntimeError::Store(vc_host::store::StoreError::PodNotFound(_)))) => {}
            Ok(Err(e)) => warn!(pod_id = %pod, error = %e, "cannot remove the pod"),
            Err(_) => warn!(pod_id = %pod, "removing the pod did not finish in time"),
        }
        return;
    }
    let Ok(container) = group::container_id(id) else {
        return;
    };
    let remove_container = async {
        let _ = runtime
            .stop_container(&pod, &container, Duration::ZERO)
            .await;
        runtime.delete_container(&pod, &container).await
    };
    match tokio::time::timeout(deadline, remove_container).await {
        Ok(Ok(())) => info!(pod_id = %pod, container_id = %container, "container removed"),
        Ok(Err(e)) => {
            warn!(pod_id = %pod, container_id = %container, error = %e, "cannot remove the container (the sandbox's cleanup removes the pod)")
        }
        Err(_) => {
            warn!(pod_id = %pod, container_id = %container, "removing the container did not finish in time")
        }
    }
}
