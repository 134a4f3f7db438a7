//! Pids (`ctr task ps`): every process of the container, as runc lists its
//! cgroup. The agent reads the container's cgroup in the guest
//! ([`vc_host::Runtime::container_pids`]); the processes the shim started as
//! execs are marked with their exec id, in runc's `ProcessDetails` message so
//! that `ctr` and other clients decode it.

use containerd_shim::api::{PidsRequest, PidsResponse};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedOutputStream;
use containerd_shim::protos::types::task::ProcessInfo;

use super::state::{Phase, Task};
use super::{call, ServiceError, Shared};

/// The type URL of runc's `ProcessDetails { string exec_id = 1; }`, the
/// message containerd's clients expect in `ProcessInfo.info`.
pub const PROCESS_DETAILS_TYPE_URL: &str = "containerd.runc.v1.ProcessDetails";

impl Shared {
    pub(super) async fn pids(&self, req: PidsRequest) -> Result<PidsResponse, ServiceError> {
        let task = self.task(&req.id)?;
        let pids = if task.init.phase() == Phase::Created || self.vm_gone() {
            // Nothing of it runs yet, or any more.
            Vec::new()
        } else {
            let pod = self.pod()?;
            call(
                "listing the container's processes",
                self.timeouts().call(),
                self.runtime()?.container_pids(&pod.id, &task.container),
            )
            .await?
        };
        Ok(PidsResponse {
            processes: process_infos(&task, &pids)?,
            ..PidsResponse::default()
        })
    }
}

/// One `ProcessInfo` per pid, an exec's carrying its exec id.
fn process_infos(task: &Task, pids: &[u32]) -> Result<Vec<ProcessInfo>, ServiceError> {
    let execs: Vec<(u32, String)> = task
        .processes()
        .iter()
        .filter(|p| !p.exec_id.is_empty() && p.phase() == Phase::Running && p.pid() != 0)
        .map(|p| (p.pid(), p.exec_id.clone()))
        .collect();
    pids.iter()
        .map(|&pid| {
            let info = match execs.iter().find(|(p, _)| *p == pid) {
                Some((_, exec_id)) => Some(process_details(exec_id)?),
                None => None,
            };
            Ok(ProcessInfo {
                pid,
                info: info.into(),
                ..ProcessInfo::default()
            })
        })
        .collect()
}

/// runc's `ProcessDetails` for `exec_id`, packed in an `Any`.
fn process_details(exec_id: &str) -> Result<Any, ServiceError> {
    let mut value = Vec::new();
    let mut out = CodedOutputStream::vec(&mut value);
    out.write_string(1, exec_id)
        .and_then(|()| out.flush())
        .map_err(|e| ServiceError::Invalid(format!("cannot encode the process details: {e}")))?;
    drop(out);
    let mut any = Any::new();
    any.type_url = PROCESS_DETAILS_TYPE_URL.to_owned();
    any.value = value;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_details_is_runcs_message() {
        let any = process_details("exec-1").expect("encodes");
        assert_eq!(any.type_url, "containerd.runc.v1.ProcessDetails");
        // Field 1, length-delimited (0x0a), 6 bytes.
        assert_eq!(any.value, b"\x0a\x06exec-1");
    }
}
