//! The kernel modules the vsock listener does not need (network, block,
//! virtio-fs, overlay, balloon): loaded on a background thread once the
//! listener is up ([`LateModules::start`]), and waited for by every request
//! that may use them ([`LateModules::ready`]), so that the host's handshake
//! does not wait for them and no request sees them missing.

use std::path::PathBuf;
use std::sync::Mutex;

use tokio::sync::watch;
use vc_proto::{AgentError, ErrorCode};

use crate::boot::modules::load_list;
use crate::power::error_chain;

/// Where the late modules are: not started, loading, or done.
type Outcome = Option<Result<(), String>>;

/// The late modules and their loading.
#[derive(Debug)]
pub struct LateModules {
    /// The module directory.
    dir: PathBuf,
    /// Loaded before the listener.
    early: Vec<String>,
    /// Loaded in the background.
    late: Vec<String>,
    /// Taken by the one [`LateModules::start`] that loads them.
    started: Mutex<bool>,
    /// `Some` once the loading ended.
    outcome: watch::Sender<Outcome>,
}

/// Nice value of the loading thread: on a one-vCPU guest the handshake and
/// the first requests go first.
const LOADER_NICE: libc::c_int = 10;

impl LateModules {
    /// `early` are loaded already; `late` will be, from `dir`.
    pub fn new(early: Vec<String>, late: Vec<String>, dir: PathBuf) -> Self {
        let done = late.is_empty().then_some(Ok(()));
        Self {
            dir,
            early,
            late,
            started: Mutex::new(false),
            outcome: watch::channel(done).0,
        }
    }

    /// Starts loading the late modules on a thread of their own; only the
    /// first call does anything.
    pub fn start(&self) {
        {
            let Ok(mut started) = self.started.lock() else {
                return;
            };
            if *started || self.outcome.borrow().is_some() {
                return;
            }
            *started = true;
        }
        let (names, dir, outcome) = (self.late.clone(), self.dir.clone(), self.outcome.clone());
        let spawned = std::thread::Builder::new()
            .name("modules".to_owned())
            .spawn(move || {
                // SAFETY: setpriority takes no pointer; on Linux, who = 0
                // with PRIO_PROCESS is the calling thread only.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, LOADER_NICE) };
                let start = std::time::Instant::now();
                let result = load_list(&names, &dir).map_err(|e| error_chain(&e));
                match &result {
                    Ok(()) => tracing::info!(
                        modules = names.len(),
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "late modules loaded"
                    ),
                    Err(e) => tracing::error!("late modules failed: {e}"),
                }
                outcome.send_replace(Some(result));
            });
        if let Err(e) = spawned {
            self.outcome.send_replace(Some(Err(format!(
                "cannot start the module loading thread: {e}"
            ))));
        }
    }

    /// Waits until the late modules are loaded; fails when they could not be.
    pub async fn ready(&self) -> Result<(), AgentError> {
        let mut rx = self.outcome.subscribe();
        // The sender lives in `self`, so the wait ends only with an outcome.
        let outcome = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|o| o.clone());
        match outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(AgentError::new(
                ErrorCode::System,
                format!("the guest's kernel modules did not load: {e}"),
            )),
            None => Err(AgentError::new(
                ErrorCode::Internal,
                "the module loading was abandoned",
            )),
        }
    }

    /// The modules loaded so far, in load order.
    pub fn loaded(&self) -> Vec<String> {
        let mut names = self.early.clone();
        if matches!(*self.outcome.borrow(), Some(Ok(()))) {
            names.extend(self.late.iter().cloned());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nothing_late_is_ready_at_once() {
        let m = LateModules::new(vec!["a.ko".into()], Vec::new(), "/nonexistent".into());
        m.ready().await.expect("ready");
        assert_eq!(m.loaded(), ["a.ko"]);
    }

    #[tokio::test]
    async fn a_failed_load_fails_every_wait_naming_the_module() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("junk.ko"), b"not an elf").expect("write");
        let m = LateModules::new(
            vec!["a.ko".into()],
            vec!["junk.ko".into()],
            dir.path().to_owned(),
        );
        m.start();
        m.start();
        for _ in 0..2 {
            let e = m.ready().await.expect_err("junk refused");
            assert!(e.message.contains("junk.ko"), "{}", e.message);
        }
        assert_eq!(m.loaded(), ["a.ko"]);
    }
}
