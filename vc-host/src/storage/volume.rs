//! Volumes and tmpfs mounts of a container: the configuration types, the
//! command-line forms (`HOST:CONTAINER[:ro]`, `PATH[:size=..,mode=..]`), the
//! checks made before anything is created, and the [`vc_proto::Mount`]s the
//! agent receives.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::paths::{check_container_path, depth};
use super::StorageConfigError;

/// A host directory or file mounted into a container, through the pod's
/// virtio-fs share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The host path; it must exist when the container is created.
    pub host_path: PathBuf,
    /// Where it appears in the container: absolute and normalized.
    pub container_path: String,
    /// Mount it read-only: writes inside the container fail with `EROFS`.
    #[serde(default)]
    pub readonly: bool,
}

/// A tmpfs mounted in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TmpfsConfig {
    /// Where it is mounted in the container: absolute and normalized.
    pub path: String,
    /// Its size in bytes (default: the kernel's, half the guest's memory).
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Permission bits of its root (`0o1777` in TOML, 1023 in JSON; default
    /// the kernel's, `0o1777`).
    #[serde(default)]
    pub mode: Option<u32>,
}

/// A `--volume` or `--tmpfs` argument that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VolumeSpecError {
    /// Not `HOST:CONTAINER[:ro|rw]`.
    #[error("volume {0:?} is not HOST:CONTAINER[:ro|rw]")]
    Volume(String),
    /// Not `PATH[:size=SIZE,mode=OCTAL]`.
    #[error("tmpfs {0:?} is not PATH[:size=SIZE,mode=OCTAL]")]
    Tmpfs(String),
    /// Not `IMAGE:CONTAINER[:ro|rw][:FSTYPE]`.
    #[error("disk {0:?} is not IMAGE:CONTAINER[:ro|rw][:FSTYPE]")]
    Disk(String),
    /// A size that is not a number with an optional `k`, `m` or `g`.
    #[error("size {0:?} is not a number of bytes with an optional k, m or g suffix")]
    Size(String),
}

impl FromStr for VolumeConfig {
    type Err = VolumeSpecError;

    /// `HOST:CONTAINER`, `HOST:CONTAINER:ro` or `HOST:CONTAINER:rw`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VolumeSpecError::Volume(s.to_owned());
        let mut parts = s.split(':');
        let host = parts.next().filter(|h| !h.is_empty()).ok_or_else(bad)?;
        let container = parts.next().filter(|c| !c.is_empty()).ok_or_else(bad)?;
        let readonly = match parts.next() {
            None | Some("rw") => false,
            Some("ro") => true,
            Some(_) => return Err(bad()),
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(VolumeConfig {
            host_path: PathBuf::from(host),
            container_path: container.to_owned(),
            readonly,
        })
    }
}

impl FromStr for TmpfsConfig {
    type Err = VolumeSpecError;

    /// `PATH`, or `PATH:` followed by `size=SIZE` and/or `mode=OCTAL`,
    /// comma-separated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || VolumeSpecError::Tmpfs(s.to_owned());
        let (path, opts) = match s.split_once(':') {
            Some((p, o)) => (p, Some(o)),
            None => (s, None),
        };
        if path.is_empty() {
            return Err(bad());
        }
        let mut t = TmpfsConfig {
            path: path.to_owned(),
            size_bytes: None,
            mode: None,
        };
        for opt in opts.into_iter().flat_map(|o| o.split(',')) {
            match opt.split_once('=') {
                Some(("size", v)) => t.size_bytes = Some(parse_size(v)?),
                Some(("mode", v)) => {
                    t.mode = Some(u32::from_str_radix(v, 8).map_err(|_| bad())?);
                }
                _ => return Err(bad()),
            }
        }
        Ok(t)
    }
}

/// Parses `1048576`, `1024k`, `64m`, `1g` (binary units, any case) into bytes.
pub fn parse_size(s: &str) -> Result<u64, VolumeSpecError> {
    let bad = || VolumeSpecError::Size(s.to_owned());
    let (num, mult) = match s.as_bytes().last().map(u8::to_ascii_lowercase) {
        Some(b'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult).ok_or_else(bad)
}

fn invalid(field: &'static str, path: &str, reason: &str) -> StorageConfigError {
    StorageConfigError::Invalid {
        field,
        reason: format!("{path:?}: {reason}"),
    }
}

/// Checks volumes, tmpfs mounts and the `/dev/shm` size: host paths exist,
/// container paths are absolute, normalized and used once, sizes are not zero
/// (zero would mean "unlimited" to tmpfs), modes fit in `0o7777`.
pub(crate) fn validate(
    volumes: &[VolumeConfig],
    tmpfs: &[TmpfsConfig],
    shm_size_bytes: Option<u64>,
) -> Result<(), StorageConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for v in volumes {
        check_container_path(&v.container_path)
            .map_err(|r| invalid("volumes.container_path", &v.container_path, r))?;
        if !seen.insert(v.container_path.as_str()) {
            return Err(invalid(
                "volumes.container_path",
                &v.container_path,
                "the path is mounted twice",
            ));
        }
        if std::fs::metadata(&v.host_path).is_err() {
            return Err(StorageConfigError::MissingPath {
                what: "volume host path",
                path: v.host_path.clone(),
            });
        }
    }
    for t in tmpfs {
        check_container_path(&t.path).map_err(|r| invalid("tmpfs.path", &t.path, r))?;
        if !seen.insert(t.path.as_str()) {
            return Err(invalid("tmpfs.path", &t.path, "the path is mounted twice"));
        }
        if t.size_bytes == Some(0) {
            return Err(invalid(
                "tmpfs.size_bytes",
                &t.path,
                "a size of 0 is refused",
            ));
        }
        if t.mode.is_some_and(|m| m > 0o7777) {
            return Err(invalid("tmpfs.mode", &t.path, "the mode is above 0o7777"));
        }
    }
    if let Some(size) = shm_size_bytes {
        if size == 0 {
            return Err(invalid(
                "shm_size_bytes",
                "/dev/shm",
                "a size of 0 is refused",
            ));
        }
        if seen.contains("/dev/shm") {
            return Err(invalid(
                "shm_size_bytes",
                "/dev/shm",
                "a volume or tmpfs is already mounted there",
            ));
        }
    }
    Ok(())
}

/// The mounts the agent makes for these volumes (`volume_source(i)` is the
/// guest path of volume `i` in the share), tmpfs mounts and `/dev/shm`,
/// parents before children.
pub fn guest_mounts(
    volumes: &[VolumeConfig],
    tmpfs: &[TmpfsConfig],
    shm_size_bytes: Option<u64>,
    volume_source: impl Fn(usize) -> String,
) -> Vec<vc_proto::Mount> {
    let mut out = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let mut options = vec!["rbind".to_owned()];
        if v.readonly {
            options.push("ro".to_owned());
        }
        out.push(vc_proto::Mount {
            source: volume_source(i),
            destination: v.container_path.clone(),
            fstype: "bind".to_owned(),
            options,
        });
    }
    for t in tmpfs {
        let mut options = vec!["nosuid".to_owned(), "nodev".to_owned()];
        if let Some(size) = t.size_bytes {
            options.push(format!("size={size}"));
        }
        if let Some(mode) = t.mode {
            options.push(format!("mode={mode:o}"));
        }
        out.push(vc_proto::Mount {
            source: "tmpfs".to_owned(),
            destination: t.path.clone(),
            fstype: "tmpfs".to_owned(),
            options,
        });
    }
    if let Some(size) = shm_size_bytes {
        out.push(vc_proto::Mount {
            source: "shm".to_owned(),
            destination: "/dev/shm".to_owned(),
            fstype: "tmpfs".to_owned(),
            options: ["nosuid", "nodev", "noexec", "mode=1777"]
                .into_iter()
                .map(str::to_owned)
                .chain(std::iter::once(format!("size={size}")))
                .collect(),
        });
    }
    out.sort_by_key(|m| depth(&m.destination));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_arguments_parse() {
        let v: VolumeConfig = "/srv/data:/data".parse().expect("parses");
        assert_eq!(v.host_path, PathBuf::from("/srv/data"));
        assert_eq!(v.container_path, "/data");
        assert!(!v.readonly);
        assert!("/a:/b:ro".parse::<VolumeConfig>().expect("ro").readonly);
        assert!(!"/a:/b:rw".parse::<VolumeConfig>().expect("rw").readonly);
        for bad in ["", "/a", "/a:", ":/b", "/a:/b:rx", "/a:/b:ro:x"] {
            assert_eq!(
                bad.parse::<VolumeConfig>(),
                Err(VolumeSpecError::Volume(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn tmpfs_arguments_parse() {
        let t: TmpfsConfig = "/scratch:size=64m,mode=1777".parse().expect("parses");
        assert_eq!(t.path, "/scratch");
        assert_eq!(t.size_bytes, Some(64 << 20));
        assert_eq!(t.mode, Some(0o1777));
        let t: TmpfsConfig = "/t".parse().expect("bare path");
        assert_eq!((t.size_bytes, t.mode), (None, None));
        assert!("/t:size=lots".parse::<TmpfsConfig>().is_err());
        assert!("/t:mode=999".parse::<TmpfsConfig>().is_err());
        assert!("/t:uid=0".parse::<TmpfsConfig>().is_err());
        assert!(":size=1m".parse::<TmpfsConfig>().is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("99999999999999999999g").is_err());
    }

    #[test]
    fn validation_refuses_what_cannot_work() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let host = tmp.path().to_owned();
        let vol = |c: &str| VolumeConfig {
            host_path: host.clone(),
            container_path: c.to_owned(),
            readonly: false,
        };
        validate(&[vol("/data")], &[], Some(1 << 20)).expect("valid");
        let err = validate(&[vol("data")], &[], None).expect_err("relative");
        assert_eq!(
            err.to_string(),
            "invalid volumes.container_path: \"data\": it is not an absolute path"
        );
        assert!(validate(&[vol("/a/../b")], &[], None).is_err());
        assert!(validate(&[vol("/a"), vol("/a")], &[], None).is_err());
        let missing = VolumeConfig {
            host_path: host.join("missing"),
            ..vol("/data")
        };
        let err = validate(&[missing], &[], None).expect_err("missing");
        assert!(
            matches!(err, StorageConfigError::MissingPath { .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("volume host path /"), "{err}");

        let t = |size, mode| TmpfsConfig {
            path: "/t".to_owned(),
            size_bytes: size,
            mode,
        };
        validate(&[], &[t(Some(1), Some(0o755))], None).expect("valid");
        assert!(validate(&[], &[t(Some(0), None)], None).is_err());
        assert!(validate(&[], &[t(None, Some(0o17777))], None).is_err());
        assert!(validate(&[vol("/t")], &[t(None, None)], None).is_err());
        assert!(validate(&[], &[], Some(0)).is_err());
        let shm = TmpfsConfig {
            path: "/dev/shm".to_owned(),
            size_bytes: None,
            mode: None,
        };
        assert!(validate(&[], &[shm], Some(1 << 20)).is_err());
    }

    #[test]
    fn guest_mounts_bind_the_share_and_order_parents_first() {
        let vols = vec![
            VolumeConfig {
                host_path: "/h/inner".into(),
                container_path: "/data/inner".to_owned(),
                readonly: true,
            },
            VolumeConfig {
                host_path: "/h/data".into(),
                container_path: "/data".to_owned(),
                readonly: false,
            },
        ];
        let tmpfs = vec![TmpfsConfig {
            path: "/scratch".to_owned(),
            size_bytes: Some(1 << 20),
            mode: Some(0o700),
        }];
        let mounts = guest_mounts(&vols, &tmpfs, Some(8 << 20), |i| format!("/share/{i}"));
        let view: Vec<(&str, &str, &str, String)> = mounts
            .iter()
            .map(|m| {
                (
                    m.source.as_str(),
                    m.destination.as_str(),
                    m.fstype.as_str(),
                    m.options.join(","),
                )
            })
            .collect();
        assert_eq!(
            view,
            vec![
                ("/share/1", "/data", "bind", "rbind".to_owned()),
                (
                    "tmpfs",
                    "/scratch",
                    "tmpfs",
                    "nosuid,nodev,size=1048576,mode=700".to_owned()
                ),
                ("/share/0", "/data/inner", "bind", "rbind,ro".to_owned()),
                (
                    "shm",
                    "/dev/shm",
                    "tmpfs",
                    "nosuid,nodev,noexec,mode=1777,size=8388608".to_owned()
                ),
            ]
        );
    }
}
