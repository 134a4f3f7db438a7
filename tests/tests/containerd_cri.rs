//! containerd's CRI plugin driving vc's shim, called as kubelet calls it: the `k8s-cri` crate's
//! gRPC client (tonic over the daemon's unix socket) against a private containerd 1.6 whose
//! runtime handler `vc` is `io.containerd.vc.v2`. A sandbox on the node network (no CNI) with
//! the pause image preloaded, two containers in it (one VM), exec, status, stop and removal; the
//! daemon ends with nothing left behind.

mod support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{ImageSpec, ImageStatusRequest, VersionRequest};
use support::containerd::{oci_images, Containerd, BUSYBOX, CRI_NAMESPACE, PAUSE};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// How long a CRI call that does not boot a VM gets.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A gRPC channel over the daemon's unix socket.
async fn connect(socket: &Path) -> Result<Channel> {
    let path: PathBuf = socket.to_owned();
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
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
