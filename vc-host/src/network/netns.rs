//! Running netlink work inside another network namespace: a dedicated thread
//! enters it with `setns(2)` (only that thread changes namespace) and drives a
//! current-thread tokio runtime with its own rtnetlink connection, whose
//! socket, and any tap opened there, belong to that namespace.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::CloneFlags;

use super::NetworkError;

/// An rtnetlink connection opened inside the target namespace.
#[derive(Debug, Clone)]
pub(super) struct Nl {
    pub net: vc_netlink::Netlink,
}

impl Nl {
    /// rtnetlink's handle, for requests that change the namespace.
    pub fn handle(&self) -> &rtnetlink::Handle {
        self.net.handle()
    }
}

/// Maps an rtnetlink error to [`NetworkError::Netlink`] with what was being done.
pub(super) fn netlink(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let to_error = vc_netlink::request(action);
    move |source| NetworkError::Netlink(to_error(source))
}

/// Opens `path` and refuses the namespace this process runs in.
fn open(path: &Path) -> Result<File, NetworkError> {
    let file = File::open(path).map_err(|source| NetworkError::OpenNetns {
        path: path.to_owned(),
        source,
    })?;
    let target = file.metadata().map_err(|source| NetworkError::OpenNetns {
        path: path.to_owned(),
        source,
    })?;
    if let Ok(own) = std::fs::metadata("/proc/self/ns/net") {
        if own.dev() == target.dev() && own.ino() == target.ino() {
            return Err(NetworkError::HostNamespace {
                path: path.to_owned(),
            });
        }
    }
    Ok(file)
}

/// Runs `work` with a netlink connection inside the namespace at `path` and
/// returns its result.
pub(super) async fn run_in<F, Fut, T>(path: &Path, work: F) -> Result<T, NetworkError>
where
    F: FnOnce(Nl) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NetworkError>>,
    T: Send + 'static,
{
    let file = open(path)?;
    let path = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // The caller's span (with the pod id) covers the thread's logs too.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("vc-netns".to_owned())
        .spawn(move || {
            let _entered = span.enter();
            let result = (|| {
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    NetworkError::EnterNetns {
                        path: path.clone(),
                        source,
                    }
                })?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(NetworkError::Worker)?;
                rt.block_on(async move {
                    let net = vc_netlink::Netlink::connect()?;
                    work(Nl { net }).await
                })
            })();
            // The receiver is gone only when the caller stopped waiting.
            let _ = tx.send(result);
        })
        .map_err(NetworkError::Worker)?;
    rx.await.map_err(|_| {
        NetworkError::Worker(std::io::Error::other("the thread ended without an answer"))
    })?
}
