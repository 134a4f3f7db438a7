//! containerd's CRI plugin driving vc's shim, called as kubelet calls it: the `k8s-cri` crate's
//! gRPC client (tonic over the daemon's unix socket) against a private containerd 1.6 whose
//! runtime handler `vc` is `io.containerd.vc.v2`. A sandbox on the node network (no CNI) with
//! the pause image preloaded, two containers in it (one VM), exec, status, stop and removal; the
//! daemon ends with nothing left behind.

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, ImageSpec, ImageStatusRequest,
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    VersionRequest,
};
use support::containerd::{
    oci_images, Containerd, BOOT_TIMEOUT, BUSYBOX, CRI_NAMESPACE, HANDLER, PAUSE, RUNTIME,
};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// How long a CRI call that does not boot a VM gets.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A gRPC channel over the daemon's unix socket.
async fn connect(socket: &Path) -> Result<Channel> {
    let path: PathBuf = socket.to_owned();
    let endpoint = Endpoint::try_from("http://[::]:50051")?;
    let connect = endpoint.connect_with_connector(service_fn(move |_: Uri| {
        let path = path.clone();
        async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
    }));
    let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .with_context(|| {
            format!("containerd's CRI service did not answer within {CALL_TIMEOUT:?}")
        })?
        .context("cannot connect to containerd's CRI service")?;
    Ok(channel)
}

/// Awaits a CRI call for up to `timeout`; its response, or an error naming the call.
async fn call<T, F>(what: &str, timeout: Duration, f: F) -> Result<T>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    tokio::time::timeout(timeout, f)
        .await
        .with_context(|| format!("{what} did not answer within {timeout:?}"))?
        .with_context(|| format!("{what} failed"))
        .map(tonic::Response::into_inner)
}

/// The namespaces the kubelet asks for in a pod without
/// shareProcessNamespace: each container its own PID namespace (CRI's
/// default, POD, would join the sandbox's, which vc refuses), IPC shared.
fn namespaces(network: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: network as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

fn sandbox_config(log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "vc-pod".into(),
            uid: "0b1e6a52-6c1b-4c6e-9d7a-3d2f6c1e0001".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "vc-pod".into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(NamespaceMode::Node)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces(NamespaceMode::Pod)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits until a file holds `needle`.
async fn wait_for_file_text(path: &Path, needle: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Ok(text);
        }
        ensure!(
            Instant::now() < deadline,
            "{} did not show {needle:?} within {timeout:?}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A daemon with the pause and busybox images preloaded into the CRI plugin's namespace (nothing
/// is pulled from a registry), and a runtime for the gRPC calls.
fn cri_daemon() -> Result<(Containerd, tokio::runtime::Runtime)> {
    let images = oci_images()?;
    let c = Containerd::start()?;
    c.import(CRI_NAMESPACE, &images.pause, PAUSE)?;
    c.import(CRI_NAMESPACE, &images.busybox, BUSYBOX)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    Ok((c, rt))
}

/// Connects, checks Version, and that the CRI plugin sees the preloaded sandbox image.
async fn cri_client(c: &Containerd) -> Result<RuntimeServiceClient<Channel>> {
    let channel = connect(c.socket()).await?;
    let mut cri = RuntimeServiceClient::new(channel.clone());
    let mut images = ImageServiceClient::new(channel);
    let version = call(
        "Version",
        CALL_TIMEOUT,
        cri.version(VersionRequest::default()),
    )
    .await?;
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    let pause = call(
        "ImageStatus",
        CALL_TIMEOUT,
        images.image_status(ImageStatusRequest {
            image: Some(ImageSpec {
                image: PAUSE.into(),
                ..Default::default()
            }),
            verbose: false,
        }),
    )
    .await?;
    ensure!(pause.image.is_some(), "the CRI plugin does not see {PAUSE}");
    Ok(cri)
}

/// The harness alone, no VM: the daemon answers ctr (at start) and CRI, imports the images, and
/// stops leaving nothing behind.
#[test]
fn cri_version_answers_and_the_images_are_preloaded() -> Result<()> {
    let (c, rt) = cri_daemon()?;
    rt.block_on(cri_client(&c))?;
    drop(rt);
    c.finish()
}

#[test]
fn cri_runs_a_sandbox_with_two_containers_in_one_vm() -> Result<()> {
    let (c, rt) = cri_daemon()?;
    let log_dir = c.dir().join("pod-logs");
    std::fs::create_dir_all(&log_dir)?;
    rt.block_on(async {
        let mut cri = cri_client(&c).await?;

        // The sandbox: node network, runtime handler vc.
        let config = sandbox_config(&log_dir);
        let sandbox = call(
            "RunPodSandbox",
            BOOT_TIMEOUT,
            cri.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: HANDLER.into(),
            }),
        )
        .await?
        .pod_sandbox_id;
        let status = call(
            "PodSandboxStatus",
            CALL_TIMEOUT,
            cri.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.clone(),
                verbose: true,
            }),
        )
        .await?;
        let info: serde_json::Value =
            serde_json::from_str(status.info.get("info").context("no verbose info")?)?;
        assert_eq!(info["runtimeHandler"], HANDLER, "{info:#}");
        assert_eq!(info["runtimeType"], RUNTIME, "{info:#}");
        // The shim serving it is vc's.
        assert_eq!(c.shim_pids().len(), 1, "{:?}", c.processes());

        // Two containers in it.
        let mut ids = Vec::new();
        for name in ["first", "second"] {
            let id = call(
                "CreateContainer",
                BOOT_TIMEOUT,
                cri.create_container(CreateContainerRequest {
                    pod_sandbox_id: sandbox.clone(),
                    config: Some(container_config(
                        name,
                        &[
                            "sh",
                            "-c",
                            "trap 'exit 42' TERM; echo started; while :; do sleep 1; done",
                        ],
                    )),
                    sandbox_config: Some(config.clone()),
                }),
            )
            .await?
            .container_id;
            call(
                "StartContainer",
                BOOT_TIMEOUT,
                cri.start_container(StartContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await?;
            // Its stdout reaches the CRI log.
            wait_for_file_text(
                &log_dir.join(format!("{name}.log")),
                "stdout F started",
                BOOT_TIMEOUT,
            )
            .await?;
            ids.push(id);
        }

        let exec = |id: &str, cmd: &[&str]| {
            let req = ExecSyncRequest {
                container_id: id.to_owned(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 120,
            };
            let mut cri = cri.clone();
            async move {
                call::<ExecSyncResponse, _>("ExecSync", BOOT_TIMEOUT, cri.exec_sync(req)).await
            }
        };
        let ran = exec(&ids[0], &["sh", "-c", "echo out; echo err >&2; exit 3"]).await?;
        assert_eq!(ran.exit_code, 3, "{ran:?}");
        assert_eq!(ran.stdout, b"out\n", "{ran:?}");
        assert_eq!(ran.stderr, b"err\n", "{ran:?}");
        let mut boot_ids = Vec::new();
        for id in &ids {
            let ran = exec(id, &["cat", "/proc/sys/kernel/random/boot_id"]).await?;
            assert_eq!(ran.exit_code, 0, "{ran:?}");
            boot_ids.push(String::from_utf8_lossy(&ran.stdout).trim().to_owned());
        }
        assert_eq!(boot_ids[0].len(), 36, "{boot_ids:?}");
        assert_eq!(
            boot_ids[0], boot_ids[1],
            "the containers run in different VMs"
        );
        assert_eq!(c.vc_pods().len(), 1, "{:?}", c.vc_pods());
        assert_eq!(c.qemu_pids().len(), 1);
        assert_eq!(c.shim_pids().len(), 1, "{:?}", c.processes());

        // Status, stop (SIGTERM reaches the trap), removal.
        for id in &ids {
            let status = call(
                "ContainerStatus",
                CALL_TIMEOUT,
                cri.container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                }),
            )
            .await?
            .status
            .context("no status")?;
            assert_eq!(
                status.state,
                ContainerState::ContainerRunning as i32,
                "{status:?}"
            );
            call(
                "StopContainer",
                BOOT_TIMEOUT,
                cri.stop_container(StopContainerRequest {
                    container_id: id.clone(),
                    timeout: 60,
                }),
            )
            .await?;
            let status = call(
                "ContainerStatus",
                CALL_TIMEOUT,
                cri.container_status(ContainerStatusRequest {
                    container_id: id.clone(),
                    verbose: false,
                }),
            )
            .await?
            .status
            .context("no status")?;
            assert_eq!(
                status.state,
                ContainerState::ContainerExited as i32,
                "{status:?}"
            );
            assert_eq!(status.exit_code, 42, "{status:?}");
            call(
                "RemoveContainer",
                CALL_TIMEOUT,
                cri.remove_container(RemoveContainerRequest {
                    container_id: id.clone(),
                }),
            )
            .await?;
        }
        call(
            "StopPodSandbox",
            BOOT_TIMEOUT,
            cri.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.clone(),
            }),
        )
        .await?;
        call(
            "RemovePodSandbox",
            BOOT_TIMEOUT,
            cri.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: sandbox.clone(),
            }),
        )
        .await?;
        anyhow::Ok(())
    })?;
    drop(rt);
    c.finish()
}
