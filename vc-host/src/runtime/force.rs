//! Forced delete: a pod whose records are corrupt or half-written (a crash
//! during create or start, a disk filled mid-write) is cleaned up from
//! whatever its state names, and nothing else.
//!
//! Each field of `state.json` is read on its own, so one broken field does not
//! hide the others; a file that is not JSON at all names nothing. What is
//! named is checked before it is acted on: VM processes are stopped only when
//! their recorded identity still matches (the hypervisor checks for a reused
//! pid), and a bind target must be one of the shapes the runtime makes under
//! the pod's own directory ([`share::check_target`]). Beyond the record, the
//! only mounts undone are those at such targets under the pod's canonical
//! directory, which a half-written record may have missed. Anything else
//! mounted there makes the delete fail rather than remove through it.

use std::path::{Path, PathBuf};

use tracing::{info, info_span, warn, Instrument};

use super::share::{self, PodShare, EXPORT_TARGETS};
use super::{Runtime, RuntimeError, SHUTDOWN_GRACE};
use crate::blocking;
use crate::hypervisor::{Vm, VmRecord};
use crate::id::PodId;
use crate::network::PodNetwork;
use crate::store::PodDir;

/// What a possibly broken `state.json` names.
#[derive(Debug, Default)]
struct Named {
    vm: Option<VmRecord>,
    network: Option<PodNetwork>,
    binds: Vec<PathBuf>,
}

impl Named {
    fn read(dir: &PodDir) -> Self {
        let Ok(value) = dir.read::<serde_json::Value>(&dir.state_path()) else {
            return Self::default();
        };
        let field = |k: &str| value.get(k).cloned().unwrap_or(serde_json::Value::Null);
        Named {
            vm: serde_json::from_value(field("vm")).ok().flatten(),
            network: serde_json::from_value(field("network")).ok().flatten(),
            binds: serde_json::from_value(field("binds")).unwrap_or_default(),
        }
    }
}

impl Runtime {
    /// Deletes a pod whatever its state and whatever state its records are
    /// in: stops the VM processes its record names, removes the network
    /// mirroring it names, undoes its binds, and removes its directory and
    /// lock. Fails, keeping the directory, when a bind cannot be undone or
    /// something else is mounted under the pod's directory.
    pub async fn force_delete_pod(&self, id: &PodId) -> Result<(), RuntimeError> {
        let span = info_span!("pod", pod_id = %id);
        async move {
            let (dir, lock) = self.store.lock_pod_dir(id).await?;
            let (dir, named) = blocking::run(move || {
                let named = Named::read(&dir);
                (dir, named)
            })
            .await;
            if let Some(record) = named.vm {
                match Vm::from_record(record) {
                    Ok(vm) => {
                        if let Err(e) = vm.stop(SHUTDOWN_GRACE).await {
                            warn!(error = %e, "hypervisor cleanup reported an error");
                        }
                    }
                    Err(e) => warn!(error = %e, "unusable VM record; nothing to stop"),
                }
            }
            // What a start killed before it recorded its VM left running.
            self.hypervisor.reap_interrupted_launch(&dir.vm_dir()).await;
            if let Some(net) = named.network {
                if let Err(e) = crate::network::teardown(&net).await {
                    warn!(error = %e, "cannot remove the pod network");
                }
            }
            // Unmounts and removals wait on the filesystem: blocking pool.
            let store = self.store.clone();
            blocking::run(move || {
                let share = PodShare::open(&dir.path)?;
                for target in bind_targets(&dir.path, named.binds)? {
                    share.unbind(&target)?;
                }
                share.remove_container_dirs()?;
                store.remove_pod(dir, lock)?;
                Ok::<(), RuntimeError>(())
            })
            .await?;
            info!("pod deleted (forced)");
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// The binds to undo: those recorded (foreign targets skipped with a warning)
/// and any runtime-shaped target mounted under `pod_dir`, containers' first
/// (deepest first), then the export in the reverse of the order it is made.
fn bind_targets(pod_dir: &Path, recorded: Vec<PathBuf>) -> Result<Vec<PathBuf>, RuntimeError> {
    let mut targets: Vec<PathBuf> = recorded
        .into_iter()
        .filter(|t| match share::check_target(t) {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "recorded bind ignored");
                false
            }
        })
        .collect();
    let mounts = crate::mountinfo::read().map_err(share::ShareError::from)?;
    for m in crate::mountinfo::under(&mounts, pod_dir) {
        if let Ok(rel) = m.mount_point.strip_prefix(pod_dir) {
            if share::check_target(rel).is_ok() && !targets.iter().any(|t| t == rel) {
                targets.push(rel.to_owned());
            }
        }
    }
    let rank = |t: &Path| {
        EXPORT_TARGETS
            .iter()
            .rev()
            .position(|e| t == Path::new(e))
            .map_or(0, |i| i + 1)
    };
    targets.sort_by_key(|t| (rank(t), std::cmp::Reverse(t.components().count())));
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_order_containers_then_export_and_skip_foreign_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let got = bind_targets(
            dir.path(),
            [
                "mounts",
                "shared",
                "mounts/c/rootfs",
                "/etc",
                "../x",
                "mounts/c/volumes/0",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
        )
        .expect("targets");
        let got: Vec<_> = got.iter().map(|p| p.to_str().unwrap_or("?")).collect();
        assert_eq!(
            got,
            ["mounts/c/volumes/0", "mounts/c/rootfs", "shared", "mounts"]
        );
    }

    /// Privileged: a pod whose `state.json` is half-written, with the export
    /// and a container's rootfs still bound (which the record no longer
    /// names), is cleaned up: binds undone, directory and lock removed, the
    /// rootfs untouched; a foreign target in a record is never acted on.
    #[tokio::test]
    async fn force_delete_cleans_a_corrupt_pod_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir(&rootfs).expect("mkdir");
        std::fs::write(rootfs.join("keep"), b"k").expect("write");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).expect("mkdir");
        let rt = Runtime::new(crate::config::RuntimeConfig {
            root: tmp.path().join("root"),
            guest_image_dir: tmp.path().join("no-image"),
            ..crate::config::RuntimeConfig::default()
        })
        .expect("runtime");
        let id = PodId::new("broken").expect("id");
        let (dir, lock) = rt.store.create_pod(&id).await.expect("create");
        let share = PodShare::open(&dir.path).expect("open");
        for t in EXPORT_TARGETS {
            share.export(t).expect("export (needs root)");
        }
        let c = crate::id::ContainerId::new("c1").expect("id");
        share.bind_rootfs(&c, &rootfs, false).expect("bind");
        // A foreign bind of the host's own, which a record might name.
        nix::mount::mount(
            Some(&rootfs),
            &outside,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind");
        std::fs::write(dir.config_path(), b"{\"id\": \"bro").expect("write");
        let state = format!(
            r#"{{"binds": ["{}", "../../outside"], "vm": null, "containers": 4}}"#,
            outside.display()
        );
        std::fs::write(dir.state_path(), state).expect("write");
        drop(lock);

        assert!(matches!(
            rt.delete_pod(&id).await,
            Err(RuntimeError::Store(
                crate::store::StoreError::Corrupt { .. }
            ))
        ));
        rt.force_delete_pod(&id).await.expect("forced delete");
        assert!(!dir.path.exists());
        assert!(!rt.store.root().join("locks/broken.lock").exists());
        assert!(share::mounts_under(&dir.path).is_empty());
        assert!(
            share::is_mount_point(&outside),
            "a foreign mount is left alone"
        );
        nix::mount::umount2(&outside, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        assert_eq!(std::fs::read(rootfs.join("keep")).expect("read"), b"k");
        assert!(matches!(
            rt.force_delete_pod(&id).await,
            Err(RuntimeError::Store(crate::store::StoreError::PodNotFound(
                _
            )))
        ));
    }

    /// Privileged: something mounted under the pod directory at a place the
    /// runtime never binds is refused, and the directory kept.
    #[tokio::test]
    async fn force_delete_refuses_a_mount_it_did_not_make() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("precious"), b"p").expect("write");
        let rt = Runtime::new(crate::config::RuntimeConfig {
            root: tmp.path().join("root"),
            guest_image_dir: tmp.path().join("no-image"),
            ..crate::config::RuntimeConfig::default()
        })
        .expect("runtime");
        let id = PodId::new("odd").expect("id");
        let (dir, lock) = rt.store.create_pod(&id).await.expect("create");
        drop(lock);
        let vm = dir.vm_dir();
        nix::mount::mount(
            Some(&data),
            &vm,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind (needs root)");
        let err = rt.force_delete_pod(&id).await.expect_err("refused");
        assert!(
            matches!(
                err,
                RuntimeError::Store(crate::store::StoreError::StillMounted { .. })
            ),
            "{err}"
        );
        assert!(data.join("precious").exists() && dir.path.exists());
        nix::mount::umount2(&vm, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        rt.force_delete_pod(&id).await.expect("forced delete");
        assert!(data.join("precious").exists() && !dir.path.exists());
    }

    #[test]
    fn a_broken_record_names_what_parses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = PodDir {
            id: PodId::new("p").expect("id"),
            path: tmp.path().to_owned(),
        };
        std::fs::write(
            dir.state_path(),
            br#"{"vm": 7, "binds": ["mounts/c/rootfs"]}"#,
        )
        .expect("write");
        let named = Named::read(&dir);
        assert!(named.vm.is_none() && named.network.is_none());
        assert_eq!(named.binds, vec![PathBuf::from("mounts/c/rootfs")]);
        std::fs::write(dir.state_path(), br#"{"state": "running", "binds": ["mou"#).expect("write");
        let named = Named::read(&dir);
        assert!(named.binds.is_empty(), "half-written: names nothing");
    }
}
