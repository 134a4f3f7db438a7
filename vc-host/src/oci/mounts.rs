//! `mounts`: binds become volumes (shared into the VM through virtio-fs),
//! tmpfs mounts stay tmpfs, the `/dev/shm` tmpfs gives its size, and the
//! standard kernel filesystems (`/proc`, `/sys`, `/sys/fs/cgroup`, the `/dev`
//! tmpfs, `/dev/pts`, `/dev/mqueue`) are accepted because the guest mounts
//! them in every container; a variant the guest does not make is refused.
//!
//! A CRI container's `/dev/shm` is a bind of its sandbox's shm directory on
//! the host; in a VM it becomes the container's own `/dev/shm` tmpfs (64 MiB),
//! since host memory cannot be shared with the guest's page cache that way.

use std::path::Path;

use oci_spec::runtime::Mount;

use super::{OciError, PodRole};
use crate::config::{TmpfsConfig, VolumeConfig};
use crate::storage::{check_container_path, parse_size};

/// What the spec's mounts become.
#[derive(Debug, Default)]
pub(super) struct Storage {
    pub volumes: Vec<VolumeConfig>,
    pub tmpfs: Vec<TmpfsConfig>,
    pub shm_size_bytes: Option<u64>,
}

/// A kernel filesystem the guest mounts in every container.
struct GuestMount {
    /// The types a spec may give it.
    types: &'static [&'static str],
    /// Where.
    dest: &'static str,
    /// The options a spec may give (the guest's own, or ones with the same
    /// effect).
    allowed: &'static [&'static str],
    /// The options a spec must give.
    required: &'static [&'static str],
}

/// The kernel filesystems the guest mounts in every container.
const GUEST_MOUNTS: [GuestMount; 6] = [
    GuestMount {
        types: &["proc"],
        dest: "/proc",
        allowed: &["nosuid", "noexec", "nodev", "rw", "relatime"],
        required: &[],
    },
    GuestMount {
        types: &["sysfs"],
        dest: "/sys",
        allowed: &["nosuid", "noexec", "nodev", "ro", "relatime"],
        required: &["ro"],
    },
    GuestMount {
        types: &["cgroup", "cgroup2"],
        dest: "/sys/fs/cgroup",
        allowed: &["nosuid", "noexec", "nodev", "ro", "relatime"],
        required: &["ro"],
    },
    GuestMount {
        types: &["tmpfs"],
        dest: "/dev",
        allowed: &[
            "nosuid",
            "noexec",
            "strictatime",
            "rw",
            "mode=755",
            "size=65536k",
        ],
        required: &[],
    },
    GuestMount {
        types: &["devpts"],
        dest: "/dev/pts",
        allowed: &[
            "nosuid",
            "noexec",
            "rw",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "mode=620",
            "gid=5",
        ],
        required: &[],
    },
    GuestMount {
        types: &["mqueue"],
        dest: "/dev/mqueue",
        allowed: &["nosuid", "noexec", "nodev", "rw", "relatime"],
        required: &[],
    },
];

/// Options every bind may carry: vc's binds are recursive, private,
/// `nosuid` and `nodev` on the host; `ro` makes them read-only.
const BIND_OPTIONS: [&str; 8] = [
    "bind", "rbind", "ro", "rw", "private", "rprivate", "nosuid", "nodev",
];

/// Options a tmpfs may carry besides `size=` and `mode=`: vc mounts tmpfs
/// `nosuid,nodev`; the access-time options only change timestamps.
const TMPFS_OPTIONS: [&str; 6] = [
    "nosuid",
    "nodev",
    "rw",
    "strictatime",
    "relatime",
    "noatime",
];

/// Maps `mounts` (bind sources relative to `bundle` are resolved against it).
pub(super) fn storage(
    mounts: &[Mount],
    bundle: &Path,
    role: &PodRole,
) -> Result<Storage, OciError> {
    let mut out = Storage::default();
    let mut seen = std::collections::BTreeSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let field = format!("mounts[{i}]");
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(OciError::unsupported(
                format!("{field}.uidMappings"),
                "idmapped mounts are not supported",
            ));
        }
        let dest = m.destination().to_string_lossy().into_owned();
        let options = m.options().clone().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if dest == "/dev/shm" {
            // containerd's default spec has a tmpfs here and CRI adds its
            // sandbox's shm bind after it: as with runc, the last one wins.
            out.shm_size_bytes = None;
            shm(&field, m, &typ, bind, &options, role, &mut out)?;
            continue;
        }
        if !seen.insert(dest.clone()) {
            return Err(OciError::unsupported(
                format!("{field}.destination"),
                format!("{dest:?} is mounted twice"),
            ));
        }
        if let Some(guest) = GUEST_MOUNTS.iter().find(|g| g.dest == dest && !bind) {
            check_guest_mount(&field, &typ, &options, guest)?;
            continue;
        }
        check_container_path(&dest).map_err(|r| {
            OciError::unsupported(format!("{field}.destination"), format!("{dest:?}: {r}"))
        })?;
        if bind {
            out.volumes
                .push(volume(&field, m, &dest, &options, bundle)?);
        } else if typ == "tmpfs" {
            out.tmpfs.push(tmpfs(&field, &dest, &options)?);
        } else {
            return Err(OciError::unsupported(
                format!("{field}.type"),
                format!("{typ:?} at {dest}: vc mounts binds and tmpfs; the guest makes proc, sysfs, cgroup, devpts, mqueue and the /dev tmpfs at their usual places"),
            ));
        }
    }
    Ok(out)
}

fn check_guest_mount(
    field: &str,
    typ: &str,
    options: &[String],
    g: &GuestMount,
) -> Result<(), OciError> {
    let GuestMount {
        types,
        dest,
        allowed,
        required,
    } = g;
    if !types.contains(&typ) {
        return Err(OciError::unsupported(
            format!("{field}.type"),
            format!("{typ:?} at {dest}: the guest mounts {} there", types[0]),
        ));
    }
    if let Some(o) = options.iter().find(|o| !allowed.contains(&o.as_str())) {
        return Err(OciError::unsupported(
            format!("{field}.options"),
            format!(
                "{o:?} on {dest}: the guest mounts it with {}",
                allowed.join(",")
            ),
        ));
    }
    if let Some(r) = required.iter().find(|r| !options.iter().any(|o| o == *r)) {
        return Err(OciError::unsupported(
            format!("{field}.options"),
            format!("{dest} without {r:?}: the guest mounts it {r}"),
        ));
    }
    Ok(())
}

/// `/dev/shm`: a tmpfs gives the size; a CRI sandbox's shm bind becomes the
/// container's own tmpfs; the host's `/dev/shm` (host IPC) is refused.
fn shm(
    field: &str,
    m: &Mount,
    typ: &str,
    bind: bool,
    options: &[String],
    role: &PodRole,
    out: &mut Storage,
) -> Result<(), OciError> {
    if bind {
        let source = m.source().as_deref().unwrap_or(Path::new(""));
        if source == Path::new("/dev/shm") {
            return Err(OciError::unsupported(
                format!("{field}.source"),
                "the host's /dev/shm (host IPC) cannot be shared with a VM",
            ));
        }
        if *role == PodRole::Standalone {
            return Err(OciError::unsupported(
                format!("{field}.type"),
                "a bind at /dev/shm: vc gives every container its own /dev/shm tmpfs",
            ));
        }
        // CRI's sandbox shm directory: the container's own tmpfs instead.
        return Ok(());
    }
    if typ != "tmpfs" {
        return Err(OciError::unsupported(
            format!("{field}.type"),
            format!("{typ:?} at /dev/shm: it is a tmpfs"),
        ));
    }
    for o in options {
        match o.split_once('=') {
            Some(("size", v)) => {
                let size = parse_size(v).map_err(|e| OciError::invalid(format!("{field}.options"), e.to_string()))?;
                if size == 0 {
                    return Err(OciError::invalid(format!("{field}.options"), "size=0 (unlimited) is refused"));
                }
                out.shm_size_bytes = Some(size);
            }
            Some(("mode", "1777")) => {}
            None if ["nosuid", "noexec", "nodev", "rw"].contains(&o.as_str()) => {}
            _ => {
                return Err(OciError::unsupported(
                    format!("{field}.options"),
                    format!("{o:?} on /dev/shm: the guest mounts it nosuid,nodev,noexec,mode=1777 with a size"),
                ))
            }
        }
    }
    Ok(())
}

fn volume(
    field: &str,
    m: &Mount,
    dest: &str,
    options: &[String],
    bundle: &Path,
) -> Result<VolumeConfig, OciError> {
    let source = m
        .source()
        .as_ref()
        .filter(|s| !s.as_os_str().is_empty())
        .ok_or_else(|| OciError::missing(format!("{field}.source")))?;
    if let Some(o) = options.iter().find(|o| !BIND_OPTIONS.contains(&o.as_str())) {
        return Err(OciError::unsupported(
            format!("{field}.options"),
            format!(
                "{o:?}: vc's binds are recursive, private, nosuid and nodev, read-only with \"ro\""
            ),
        ));
    }
    Ok(VolumeConfig {
        host_path: bundle.join(source),
        container_path: dest.to_owned(),
        readonly: options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro"),
    })
}

fn tmpfs(field: &str, dest: &str, options: &[String]) -> Result<TmpfsConfig, OciError> {
    let mut t = TmpfsConfig {
        path: dest.to_owned(),
        size_bytes: None,
        mode: None,
    };
    let bad = |reason: String| OciError::invalid(format!("{field}.options"), reason);
    for o in options {
        match o.split_once('=') {
            Some(("size", v)) => {
                let size = parse_size(v).map_err(|e| bad(e.to_string()))?;
                if size == 0 {
                    return Err(bad("size=0 (unlimited) is refused".to_owned()));
                }
                t.size_bytes = Some(size);
            }
            Some(("mode", v)) => {
                let mode = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(format!("mode={v} is not an octal mode")))?;
                t.mode = Some(mode);
            }
            None if TMPFS_OPTIONS.contains(&o.as_str()) => {}
            _ => {
                return Err(OciError::unsupported(
                    format!("{field}.options"),
                    format!("{o:?}: vc mounts tmpfs nosuid,nodev with a size and a mode"),
                ))
            }
        }
    }
    Ok(t)
}
