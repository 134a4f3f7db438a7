//! Masked and read-only paths (OCI `linux.maskedPaths` and
//! `linux.readonlyPaths`): checked and planned in the agent, applied by the
//! child after `pivot_root`.
//!
//! They are applied after `pivot_root`, with the container's root as `/`, as
//! runc does: the kernel then resolves every path inside the container (a link
//! in the rootfs cannot lead out of it), and `/dev/null` is the container's own
//! node, in the `/dev` tmpfs the child has just made (no process of the
//! container exists yet to change it). Read-only paths come first, then the
//! masks, in the spec's order:
//!
//! - a read-only path is bound over itself (`MS_BIND | MS_REC`) and made
//!   read-only with `mount_setattr(AT_RECURSIVE, MOUNT_ATTR_RDONLY)`, so mounts
//!   below it are read-only too;
//! - a masked file gets `/dev/null` bound over it; a masked directory (the bind
//!   fails with `ENOTDIR`) gets an empty read-only tmpfs (`nosuid,nodev,noexec`);
//! - a path that does not exist is skipped (`ENOENT`), so one list fits every
//!   kernel.

use std::ffi::CString;

use super::error::ContainerError;
use super::mounts::MountOp;

/// At most this many masked plus read-only paths (the host allows 256 of each).
pub(crate) const MAX_PATHS: usize = 512;

/// The longest path accepted, in bytes (`PATH_MAX`).
const MAX_PATH_LEN: usize = 4096;

fn invalid(field: &'static str, path: &str, reason: &'static str) -> ContainerError {
    ContainerError::InvalidPath {
        field,
        path: path.to_string(),
        reason,
    }
}

/// Checks one list: each path absolute, not `/`, without NUL, at most 4096
/// bytes.
fn check(field: &'static str, paths: &[String]) -> Result<(), ContainerError> {
    for p in paths {
        if !p.starts_with('/') {
            return Err(invalid(field, p, "it is not an absolute path"));
        }
        if p.trim_start_matches('/').is_empty() {
            return Err(invalid(field, p, "it is the root of the container"));
        }
        if p.contains('\0') {
            return Err(invalid(field, p, "it holds a NUL byte"));
        }
        if p.len() > MAX_PATH_LEN {
            return Err(invalid(field, p, "it is longer than 4096 bytes"));
        }
    }
    Ok(())
}

/// Checks the spec's masked and read-only paths before anything is created.
pub(crate) fn validate(masked: &[String], readonly: &[String]) -> Result<(), ContainerError> {
    if masked.len() + readonly.len() > MAX_PATHS {
        return Err(invalid(
            "masked_paths",
            "",
            "there are more than 512 masked and read-only paths",
        ));
    }
    check("masked_paths", masked)?;
    check("readonly_paths", readonly)
}

/// The ops the child runs after `pivot_root`: the read-only paths, then the
/// masks. `validate` has been called.
pub(crate) fn ops(masked: &[String], readonly: &[String]) -> Result<Vec<MountOp>, ContainerError> {
    let path = |p: &String| {
        CString::new(p.as_str()).map_err(|_| ContainerError::NulByte {
            what: "masked or read-only path",
        })
    };
    let index = |i: usize| u16::try_from(i).unwrap_or(u16::MAX);
    let mut ops = Vec::with_capacity(masked.len() + readonly.len());
    for (i, p) in readonly.iter().enumerate() {
        ops.push(MountOp::ReadonlyPath {
            index: index(i),
            path: path(p)?,
        });
    }
    for (i, p) in masked.iter().enumerate() {
        ops.push(MountOp::Mask {
            index: index(i),
            path: path(p)?,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_plan_is_readonly_paths_then_masks_in_order() {
        let masked = strings(&vc_proto::DEFAULT_MASKED_PATHS);
        let readonly = strings(&vc_proto::DEFAULT_READONLY_PATHS);
        validate(&masked, &readonly).expect("the defaults are valid");
        let ops = ops(&masked, &readonly).expect("ops");
        assert_eq!(ops.len(), masked.len() + readonly.len());
        let c = |s: &str| CString::new(s).expect("cstring");
        assert_eq!(
            ops[0],
            MountOp::ReadonlyPath {
                index: 0,
                path: c("/proc/bus")
            }
        );
        assert_eq!(
            ops[3],
            MountOp::ReadonlyPath {
                index: 3,
                path: c("/proc/sys")
            }
        );
        assert_eq!(
            ops[5],
            MountOp::Mask {
                index: 0,
                path: c("/proc/acpi")
            }
        );
        let masks: Vec<&CString> = ops
            .iter()
            .filter_map(|op| match op {
                MountOp::Mask { path, .. } => Some(path),
                _ => None,
            })
            .collect();
        for want in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware",
        ] {
            assert!(masks.contains(&&c(want)), "{want} is masked");
        }
        assert!(
            super::ops(&[], &[]).expect("ops").is_empty(),
            "empty lists: nothing"
        );
    }

    #[test]
    fn bad_paths_are_refused_with_their_field() {
        for (masked, readonly, field) in [
            (strings(&["proc/kcore"]), vec![], "masked_paths"),
            (vec![], strings(&["/"]), "readonly_paths"),
            (vec![], strings(&["//"]), "readonly_paths"),
            (strings(&["/a\0b"]), vec![], "masked_paths"),
            (
                vec![format!("/{}", "x".repeat(4096))],
                vec![],
                "masked_paths",
            ),
        ] {
            let e = validate(&masked, &readonly).expect_err("refused");
            assert!(
                matches!(&e, ContainerError::InvalidPath { field: f, .. } if *f == field),
                "{e}"
            );
        }
        let many = strings(&["/a"; MAX_PATHS + 1]);
        assert!(validate(&many, &[]).is_err());
    }
}
