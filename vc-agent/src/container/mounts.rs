//! The mount table of a container, planned in the agent and carried out by the
//! child in its new mount namespace before `pivot_root`.
//!
//! Planning resolves every destination inside the rootfs ([`resolve_in_root`]),
//! creates the mount points that belong to the rootfs, and turns each mount
//! into [`MountOp`]s holding only `CString`s and flags, so the child makes system
//! calls and nothing else. Destinations under `/dev` live in the tmpfs the child
//! mounts there: their mount points are created by the child (`Mkdir`/`Touch`
//! ops) after that tmpfs is mounted.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use vc_proto::Mount;

use super::error::{ContainerError, SetupStep};
use super::resolve::{clean_absolute, is_within, join_all, resolve_in_root};

/// One thing the child does to build the container's mount table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountOp {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        step: SetupStep,
        index: u16,
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    /// `mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL)`: the
    /// flags of a bind mount, which the first `mount` call ignores.
    Remount {
        step: SetupStep,
        index: u16,
        target: CString,
        flags: MsFlags,
    },
    /// `mount_setattr(target, set)`, with `AT_RECURSIVE` when `recursive`: the
    /// flags of a recursive bind (`MOUNT_ATTR_*`) on every mount below it too.
    SetAttr {
        step: SetupStep,
        index: u16,
        target: CString,
        set: u64,
        recursive: bool,
    },
    /// A masked path (after `pivot_root`): `/dev/null` bound over a file, an
    /// empty read-only tmpfs over a directory; a missing path is skipped.
    Mask { index: u16, path: CString },
    /// A read-only path (after `pivot_root`): bound over itself and made
    /// read-only recursively; a missing path is skipped.
    ReadonlyPath { index: u16, path: CString },
    /// `mount(NULL, target, NULL, propagation, NULL)`.
    Propagation {
        step: SetupStep,
        index: u16,
        target: CString,
        flags: MsFlags,
    },
    /// `mkdir`, an existing directory is fine.
    Mkdir {
        step: SetupStep,
        index: u16,
        path: CString,
        mode: u32,
    },
    /// Creates an empty file (the mount point of a file bind); an existing one is
    /// fine.
    Touch {
        step: SetupStep,
        index: u16,
        path: CString,
    },
    /// `mknod` a character device; where that is not permitted, bind-mount the
    /// agent's node (`host`) on an empty file instead.
    Mknod {
        path: CString,
        mode: u32,
        major: u32,
        minor: u32,
        host: CString,
    },
    /// `symlink(target, path)`.
    Symlink { target: CString, path: CString },
}

/// Parsed mount options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// `bind` or `rbind`.
    pub bind: bool,
    /// `rbind`.
    pub recursive: bool,
    /// Flags set (`ro`, `nosuid`, ...).
    pub flags: MsFlags,
    /// Propagation (`private`, `rslave`, ...), applied after the mount.
    pub propagation: Option<MsFlags>,
    /// Everything else, for the filesystem (`size=64m`, `mode=1777`).
    pub data: Vec<String>,
}

impl Default for MountOptions {
    fn default() -> Self {
        Self {
            bind: false,
            recursive: false,
            flags: MsFlags::empty(),
            propagation: None,
            data: Vec::new(),
        }
    }
}

/// Splits `options` into flags, propagation and filesystem data, as `mount -o`
/// does. A flag and its negation: the last one wins.
pub(crate) fn parse_options(options: &[String]) -> MountOptions {
    let mut out = MountOptions::default();
    for o in options.iter().flat_map(|o| o.split(',')) {
        let set = |out: &mut MountOptions, f: MsFlags| out.flags.insert(f);
        let clear = |out: &mut MountOptions, f: MsFlags| out.flags.remove(f);
        match o.trim() {
            "" | "defaults" => {}
            "bind" => out.bind = true,
            "rbind" => {
                out.bind = true;
                out.recursive = true;
            }
            "ro" => set(&mut out, MsFlags::MS_RDONLY),
            "rw" => clear(&mut out, MsFlags::MS_RDONLY),
            "nosuid" => set(&mut out, MsFlags::MS_NOSUID),
            "suid" => clear(&mut out, MsFlags::MS_NOSUID),
            "nodev" => set(&mut out, MsFlags::MS_NODEV),
            "dev" => clear(&mut out, MsFlags::MS_NODEV),
            "noexec" => set(&mut out, MsFlags::MS_NOEXEC),
            "exec" => clear(&mut out, MsFlags::MS_NOEXEC),
            "sync" => set(&mut out, MsFlags::MS_SYNCHRONOUS),
            "async" => clear(&mut out, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => set(&mut out, MsFlags::MS_DIRSYNC),
            "noatime" => set(&mut out, MsFlags::MS_NOATIME),
            "atime" => clear(&mut out, MsFlags::MS_NOATIME),
            "nodiratime" => set(&mut out, MsFlags::MS_NODIRATIME),
            "diratime" => clear(&mut out, MsFlags::MS_NODIRATIME),
            "relatime" => set(&mut out, MsFlags::MS_RELATIME),
            "norelatime" => clear(&mut out, MsFlags::MS_RELATIME),
            "strictatime" => set(&mut out, MsFlags::MS_STRICTATIME),
            "nostrictatime" => clear(&mut out, MsFlags::MS_STRICTATIME),
            "private" => out.propagation = Some(MsFlags::MS_PRIVATE),
            "rprivate" => out.propagation = Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => out.propagation = Some(MsFlags::MS_SHARED),
            "rshared" => out.propagation = Some(MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => out.propagation = Some(MsFlags::MS_SLAVE),
            "rslave" => out.propagation = Some(MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "unbindable" => out.propagation = Some(MsFlags::MS_UNBINDABLE),
            "runbindable" => out.propagation = Some(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            other => out.data.push(other.to_string()),
        }
    }
    out
}

/// The `MOUNT_ATTR_*` flags of `flags` that a recursive bind applies to every
/// mount below it: read-only, `nosuid`, `nodev`, `noexec`.
pub(crate) fn recursive_attrs(flags: MsFlags) -> u64 {
    [
        (MsFlags::MS_RDONLY, libc::MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, libc::MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, libc::MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, libc::MOUNT_ATTR_NOEXEC),
    ]
    .into_iter()
    .filter(|(ms, _)| flags.contains(*ms))
    .fold(0, |acc, (_, attr)| acc | attr)
}

/// Whether a spec mount is a bind mount.
pub(crate) fn is_bind(m: &Mount, o: &MountOptions) -> bool {
    m.fstype == "bind" || o.bind
}

fn cstring(what: &'static str, bytes: impl Into<Vec<u8>>) -> Result<CString, ContainerError> {
    CString::new(bytes).map_err(|_| ContainerError::NulByte { what })
}

fn cpath(p: &Path) -> Result<CString, ContainerError> {
    cstring("path", p.as_os_str().as_bytes())
}

fn invalid(m: &Mount, reason: &'static str) -> ContainerError {
    ContainerError::InvalidMount {
        destination: m.destination.clone(),
        reason,
    }
}

/// Checks what can be checked of the spec's mounts before anything is created:
/// destinations are absolute and not `/`, `/proc` or `/sys` (or below), bind
/// sources exist, strings hold no NUL.
pub(crate) fn validate(mounts: &[Mount]) -> Result<(), ContainerError> {
    if mounts.len() > usize::from(u16::MAX) {
        return Err(ContainerError::InvalidMount {
            destination: String::new(),
            reason: "too many mounts",
        });
    }
    for m in mounts {
        let parts = clean_absolute(&m.destination)
            .ok_or_else(|| invalid(m, "the destination is not an absolute path"))?;
        match parts.first().map(String::as_str) {
            None => return Err(invalid(m, "the destination is the root")),
            Some("proc" | "sys") => {
                return Err(invalid(m, "mounts on /proc and /sys are not supported"))
            }
            Some("dev")
                if matches!(
                    parts.get(1).map(String::as_str),
                    Some("fd" | "stdin" | "stdout" | "stderr" | "ptmx")
                ) =>
            {
                return Err(invalid(m, "the destination goes through a link of /dev"))
            }
            _ => {}
        }
        if m.source.contains('\0')
            || m.destination.contains('\0')
            || m.fstype.contains('\0')
            || m.options.iter().any(|o| o.contains('\0'))
        {
            return Err(ContainerError::NulByte {
                what: "mount specification",
            });
        }
        let o = parse_options(&m.options);
        if is_bind(m, &o) {
            if !Path::new(&m.source).is_absolute() {
                return Err(invalid(m, "the bind source is not an absolute path"));
            }
            if std::fs::symlink_metadata(&m.source).is_err() {
                return Err(ContainerError::MountSourceMissing {
                    source_path: PathBuf::from(&m.source),
                    destination: m.destination.clone(),
                });
            }
        } else if m.fstype.is_empty() {
            return Err(invalid(m, "the mount has no filesystem type"));
        }
    }
    Ok(())
}

/// Paths the default mounts go to, resolved inside the rootfs.
#[derive(Debug, Clone)]
pub(crate) struct DefaultTargets {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
}

fn mkdir_p(path: &Path) -> Result<(), ContainerError> {
    std::fs::create_dir_all(path).map_err(|source| ContainerError::Io {
        action: "create the mount point",
        path: path.to_path_buf(),
        source,
    })
}

fn touch_p(path: &Path) -> Result<(), ContainerError> {
    // An existing file is the mount point already; opening it for writing
    // would fail on a read-only rootfs.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir_p(parent)?;
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(source) => Err(ContainerError::Io {
            action: "create the mount point",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Resolves `dest` inside `root`; it must stay strictly below it.
fn resolve_below(root: &Path, dest: &str) -> Result<PathBuf, ContainerError> {
    let p = resolve_in_root(root, dest)?;
    if p == root || !is_within(root, &p) {
        return Err(ContainerError::InvalidMount {
            destination: dest.to_string(),
            reason: "it resolves to the root of the container",
        });
    }
    Ok(p)
}

/// Resolves and creates the mount points of `/proc`, `/sys` and `/dev`.
pub(crate) fn prepare_defaults(root: &Path) -> Result<DefaultTargets, ContainerError> {
    let t = DefaultTargets {
        proc: resolve_below(root, "/proc")?,
        sys: resolve_below(root, "/sys")?,
        dev: resolve_below(root, "/dev")?,
    };
    for p in [&t.proc, &t.sys, &t.dev] {
        mkdir_p(p)?;
    }
    Ok(t)
}

/// The options of a container's devpts instance (see [`mount_devpts`]).
pub(crate) const DEVPTS_OPTIONS: &str = "newinstance,ptmxmode=0666,mode=0620,gid=5";

/// Mounts the container's own devpts instance on `dir`, in the agent's mount
/// namespace, where the agent opens `ptmx` for the container's terminals: a pty
/// made there is the container's, so `/dev/pts/N` exists in it and `tty` works.
/// The container's `/dev/pts` is a bind of it (see [`default_ops`]).
pub(crate) fn mount_devpts(dir: &Path) -> Result<(), ContainerError> {
    mkdir_p(dir)?;
    nix::mount::mount(
        Some("devpts"),
        dir,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(DEVPTS_OPTIONS),
    )
    .map_err(|source| ContainerError::Mount {
        action: "mount the container's devpts instance on",
        path: dir.to_path_buf(),
        source,
    })
}

/// The default mounts: `/proc`, `/sys` and `/sys/fs/cgroup` (read-only), `/dev` (tmpfs) with its
/// device nodes, `pts` (a bind of the container's devpts instance at `pts_source`, see
/// [`mount_devpts`]), `shm` (unless `shm_from_spec`) and links.
pub(crate) fn default_ops(
    t: &DefaultTargets,
    pts_source: &Path,
    shm_from_spec: bool,
) -> Result<Vec<MountOp>, ContainerError> {
    let mut ops = Vec::new();
    let step_mount =
        |step, source: &str, target: &Path, fstype: &str, flags, data: Option<&str>| {
            Ok::<_, ContainerError>(MountOp::Mount {
                step,
                index: 0,
                source: Some(cstring("path", source)?),
                target: cpath(target)?,
                fstype: Some(cstring("path", fstype)?),
                flags,
                data: data.map(|d| cstring("path", d)).transpose()?,
            })
        };
    ops.push(step_mount(
        SetupStep::MountProc,
        "proc",
        &t.proc,
        "proc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?);
    ops.push(step_mount(
        SetupStep::MountSys,
        "sysfs",
        &t.sys,
        "sysfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    )?);
    // The fresh sysfs has the `fs/cgroup` mount point; in the container's
    // cgroup namespace this shows its own cgroup, read-only.
    ops.push(step_mount(
        SetupStep::MountCgroup,
        "cgroup2",
        &t.sys.join("fs/cgroup"),
        "cgroup2",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
        None,
    )?);
    // Device nodes work on it (no nodev); nothing on it is executable or
    // setuid.
    ops.push(step_mount(
        SetupStep::MountDev,
        "tmpfs",
        &t.dev,
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?);
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        ops.push(MountOp::Mknod {
            path: cpath(&t.dev.join(name))?,
            mode: libc::S_IFCHR | 0o666,
            major,
            minor,
            host: cstring("path", format!("/dev/{name}"))?,
        });
    }
    let pts = t.dev.join("pts");
    ops.push(MountOp::Mkdir {
        step: SetupStep::MountDevPts,
        index: 0,
        path: cpath(&pts)?,
        mode: 0o755,
    });
    ops.push(MountOp::Mount {
        step: SetupStep::MountDevPts,
        index: 0,
        source: Some(cpath(pts_source)?),
        target: cpath(&pts)?,
        fstype: None,
        flags: MsFlags::MS_BIND,
        data: None,
    });
    ops.push(MountOp::Remount {
        step: SetupStep::MountDevPts,
        index: 0,
        target: cpath(&pts)?,
        flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
    });
    // POSIX message queues of the container's own IPC namespace.
    let mqueue = t.dev.join("mqueue");
    ops.push(MountOp::Mkdir {
        step: SetupStep::MountMqueue,
        index: 0,
        path: cpath(&mqueue)?,
        mode: 0o755,
    });
    ops.push(step_mount(
        SetupStep::MountMqueue,
        "mqueue",
        &mqueue,
        "mqueue",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )?);
    if !shm_from_spec {
        let shm = t.dev.join("shm");
        ops.push(MountOp::Mkdir {
            step: SetupStep::MountShm,
            index: 0,
            path: cpath(&shm)?,
            mode: 0o1777,
        });
        ops.push(step_mount(
            SetupStep::MountShm,
            "shm",
            &shm,
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=1777,size=65536k"),
        )?);
    }
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: cstring("path", target)?,
            path: cpath(&t.dev.join(name))?,
        });
    }
    Ok(ops)
}

/// Whether the spec mounts something on `/dev/shm` itself (then it replaces
/// the default one).
pub(crate) fn spec_has_shm(mounts: &[Mount]) -> bool {
    spec_mounts_on(mounts, &["dev", "shm"])
}

/// Whether one of the spec's mounts has the destination whose components are
/// `path` (`["etc", "hosts"]` for `/etc/hosts`).
pub(crate) fn spec_mounts_on(mounts: &[Mount], path: &[&str]) -> bool {
    mounts
        .iter()
        .any(|m| clean_absolute(&m.destination).is_some_and(|p| p == path))
}

/// The ops of the spec's mounts, in order: mount points (created now in the
/// rootfs, or as ops for `/dev`), the mount, the remount for a bind's flags, the
/// propagation. `validate` has been called.
pub(crate) fn spec_ops(
    root: &Path,
    dev: &Path,
    mounts: &[Mount],
) -> Result<Vec<MountOp>, ContainerError> {
    let mut ops = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let index = u16::try_from(i).map_err(|_| invalid(m, "too many mounts"))?;
        let o = parse_options(&m.options);
        let bind = is_bind(m, &o);
        let file = bind
            && std::fs::metadata(&m.source)
                .map(|md| !md.is_dir())
                .unwrap_or(false);
        let parts = clean_absolute(&m.destination)
            .ok_or_else(|| invalid(m, "the destination is not an absolute path"))?;
        let step = SetupStep::MountPoint;
        let target = if parts[0] == "dev" {
            // Inside the /dev tmpfs: the child creates the path after mounting it.
            let target = join_all(dev, &parts[1..]);
            for n in 2..parts.len() {
                ops.push(MountOp::Mkdir {
                    step,
                    index,
                    path: cpath(&join_all(dev, &parts[1..n]))?,
                    mode: 0o755,
                });
            }
            if parts.len() > 1 {
                ops.push(if file {
                    MountOp::Touch {
                        step,
                        index,
                        path: cpath(&target)?,
                    }
                } else {
                    MountOp::Mkdir {
                        step,
                        index,
                        path: cpath(&target)?,
                        mode: 0o755,
                    }
                });
            }
            target
        } else {
            let target = resolve_below(root, &m.destination)?;
            if file {
                touch_p(&target)?;
            } else {
                mkdir_p(&target)?;
            }
            target
        };
        let target = cpath(&target)?;
        let step = SetupStep::SpecMount;
        if bind {
            let mut flags = MsFlags::MS_BIND;
            if o.recursive {
                flags |= MsFlags::MS_REC;
            }
            ops.push(MountOp::Mount {
                step,
                index,
                source: Some(cstring("mount source", m.source.as_str())?),
                target: target.clone(),
                fstype: None,
                flags,
                data: None,
            });
            if !o.flags.is_empty() {
                ops.push(MountOp::Remount {
                    step,
                    index,
                    target: target.clone(),
                    flags: o.flags,
                });
            }
            // The remount sets the flags of the top mount only; an rbind's
            // submounts get the same protection through mount_setattr.
            let set = recursive_attrs(o.flags);
            if o.recursive && set != 0 {
                ops.push(MountOp::SetAttr {
                    step,
                    index,
                    target: target.clone(),
                    set,
                    recursive: true,
                });
            }
        } else {
            let source = if m.source.is_empty() {
                m.fstype.as_str()
            } else {
                m.source.as_str()
            };
            ops.push(MountOp::Mount {
                step,
                index,
                source: Some(cstring("mount source", source)?),
                target: target.clone(),
                fstype: Some(cstring("filesystem type", m.fstype.as_str())?),
                flags: o.flags,
                data: if o.data.is_empty() {
                    None
                } else {
                    Some(cstring("mount options", o.data.join(","))?)
                },
            });
        }
        if let Some(flags) = o.propagation {
            ops.push(MountOp::Propagation {
                step,
                index,
                target,
                flags,
            });
        }
    }
    Ok(ops)
}

/// Bind mounts of the container's copies of `/etc/resolv.conf`, `/etc/hosts`
/// and `/etc/hostname` (`files`: name and path of the copy). A target that is
/// missing is created when the rootfs is writable and skipped otherwise; one
/// that is not a regular file is skipped.
pub(crate) fn etc_ops(
    root: &Path,
    readonly: bool,
    files: &[(&str, PathBuf)],
) -> Result<Vec<MountOp>, ContainerError> {
    let mut ops = Vec::new();
    for (i, (name, copy)) in files.iter().enumerate() {
        let target = resolve_below(root, &format!("/etc/{name}"))?;
        match std::fs::metadata(&target) {
            Ok(md) if md.is_file() => {}
            Ok(_) => {
                tracing::warn!(target = %target.display(), "not a regular file, not binding /etc/{name}");
                continue;
            }
            Err(_) if readonly => continue,
            Err(_) => {
                if let Err(e) = touch_p(&target) {
                    tracing::warn!(error = %e, "not binding /etc/{name}");
                    continue;
                }
            }
        }
        ops.push(MountOp::Mount {
            step: SetupStep::EtcFile,
            index: i as u16,
            source: Some(cpath(copy)?),
            target: cpath(&target)?,
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        });
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn mount(source: &str, destination: &str, fstype: &str, options: &[&str]) -> Mount {
        Mount {
            source: source.into(),
            destination: destination.into(),
            fstype: fstype.into(),
            options: opts(options),
        }
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_options(&opts(&[
            "rbind",
            "ro,nosuid",
            "rprivate",
            "size=64m",
            "mode=1777",
        ]));
        assert!(o.bind && o.recursive);
        assert_eq!(o.flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(o.propagation, Some(MsFlags::MS_PRIVATE | MsFlags::MS_REC));
        assert_eq!(o.data, vec!["size=64m", "mode=1777"]);
    }

    #[test]
    fn last_of_a_flag_and_its_negation_wins() {
        assert_eq!(parse_options(&opts(&["ro", "rw"])).flags, MsFlags::empty());
        assert_eq!(
            parse_options(&opts(&["rw", "ro"])).flags,
            MsFlags::MS_RDONLY
        );
        assert_eq!(
            parse_options(&opts(&["defaults", ""])),
            MountOptions::default()
        );
    }

    #[test]
    fn validation() {
        let src = tempfile::tempdir().expect("tempdir");
        let s = src.path().to_str().expect("utf-8");
        validate(&[mount(s, "/data", "bind", &["ro"])]).expect("valid bind");
        validate(&[mount("tmpfs", "/dev/shm", "tmpfs", &["size=1m"])]).expect("valid tmpfs");
        let bad = [
            mount(s, "data", "bind", &[]),
            mount(s, "/", "bind", &[]),
            mount(s, "/proc/x", "bind", &[]),
            mount(s, "/x/../sys", "bind", &[]),
            mount(s, "/dev/fd/3", "bind", &[]),
            mount("tmpfs", "/t", "", &[]),
            mount("rel/path", "/t", "none", &["bind"]),
        ];
        for m in bad {
            let e = validate(std::slice::from_ref(&m)).expect_err(&m.destination);
            assert!(matches!(e, ContainerError::InvalidMount { .. }), "{e}");
        }
        let e =
            validate(&[mount("/nonexistent/vc-test", "/data", "bind", &[])]).expect_err("missing");
        assert_eq!(
            e.to_string(),
            "the source /nonexistent/vc-test of the mount on /data does not exist"
        );
    }

    #[test]
    fn spec_ops_create_mount_points_inside_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        let src = tempfile::tempdir().expect("tempdir");
        let file = src.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let r = root.path();
        std::fs::create_dir(r.join("etc")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", r.join("link")).expect("symlink");
        let mounts = [
            mount(
                src.path().to_str().expect("utf-8"),
                "/link/data",
                "bind",
                &["ro", "rbind"],
            ),
            mount(file.to_str().expect("utf-8"), "/f", "none", &["bind"]),
            mount("tmpfs", "/dev/shm", "tmpfs", &["size=1m", "nosuid"]),
        ];
        validate(&mounts).expect("valid");
        let dev = r.join("dev");
        let ops = spec_ops(r, &dev, &mounts).expect("ops");
        assert!(
            r.join("etc/data").is_dir(),
            "created through the link, inside the root"
        );
        assert!(r.join("f").is_file());
        assert!(!dev.exists(), "the /dev mount point is left to the child");

        let target = |p: &Path| CString::new(p.as_os_str().as_bytes()).expect("cstring");
        assert_eq!(
            ops[0],
            MountOp::Mount {
                step: SetupStep::SpecMount,
                index: 0,
                source: Some(target(src.path())),
                target: target(&r.join("etc/data")),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None,
            }
        );
        assert_eq!(
            ops[1],
            MountOp::Remount {
                step: SetupStep::SpecMount,
                index: 0,
                target: target(&r.join("etc/data")),
                flags: MsFlags::MS_RDONLY,
            }
        );
        assert_eq!(
            ops[2],
            MountOp::SetAttr {
                step: SetupStep::SpecMount,
                index: 0,
                target: target(&r.join("etc/data")),
                set: libc::MOUNT_ATTR_RDONLY,
                recursive: true,
            },
            "a read-only rbind is read-only below too"
        );
        let ops = &ops[1..];
        assert!(matches!(
            ops[2],
            MountOp::Mount {
                index: 1,
                flags: MsFlags::MS_BIND,
                ..
            }
        ));
        assert_eq!(
            ops[3],
            MountOp::Mkdir {
                step: SetupStep::MountPoint,
                index: 2,
                path: target(&dev.join("shm")),
                mode: 0o755,
            }
        );
        assert_eq!(
            ops[4],
            MountOp::Mount {
                step: SetupStep::SpecMount,
                index: 2,
                source: Some(CString::new("tmpfs").expect("cstring")),
                target: target(&dev.join("shm")),
                fstype: Some(CString::new("tmpfs").expect("cstring")),
                flags: MsFlags::MS_NOSUID,
                data: Some(CString::new("size=1m").expect("cstring")),
            }
        );
        assert!(spec_has_shm(&mounts));
        assert!(spec_mounts_on(&mounts, &["dev", "shm"]));
        assert!(!spec_mounts_on(&mounts, &["dev"]));
        assert!(!spec_mounts_on(&mounts, &["etc", "hosts"]));
    }

    #[test]
    fn recursive_binds_carry_their_protection_below() {
        assert_eq!(
            recursive_attrs(
                MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC
                    | MsFlags::MS_NOATIME
            ),
            libc::MOUNT_ATTR_RDONLY
                | libc::MOUNT_ATTR_NOSUID
                | libc::MOUNT_ATTR_NODEV
                | libc::MOUNT_ATTR_NOEXEC
        );
        assert_eq!(recursive_attrs(MsFlags::MS_NOATIME), 0);
        let src = tempfile::tempdir().expect("tempdir");
        let root = tempfile::tempdir().expect("tempdir");
        let s = src.path().to_str().expect("utf-8");
        let dev = root.path().join("dev");
        // A plain bind has no submounts: the remount is enough.
        let ops = spec_ops(root.path(), &dev, &[mount(s, "/a", "bind", &["ro"])]).expect("ops");
        assert!(!ops.iter().any(|o| matches!(o, MountOp::SetAttr { .. })));
        // A writable rbind changes nothing below.
        let ops = spec_ops(root.path(), &dev, &[mount(s, "/b", "bind", &["rbind"])]).expect("ops");
        assert_eq!(ops.len(), 1, "{ops:?}");
    }

    #[test]
    fn dev_is_nosuid_and_noexec_but_keeps_its_devices() {
        let root = tempfile::tempdir().expect("tempdir");
        let t = prepare_defaults(root.path()).expect("defaults");
        let ops = default_ops(&t, Path::new("/run/vc/containers/c1/pts"), false).expect("ops");
        let dev = CString::new(t.dev.as_os_str().as_bytes()).expect("cstring");
        let flags = ops
            .iter()
            .find_map(|op| match op {
                MountOp::Mount {
                    step: SetupStep::MountDev,
                    target,
                    flags,
                    ..
                } if *target == dev => Some(*flags),
                _ => None,
            })
            .expect("the /dev mount");
        assert!(flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC));
        assert!(!flags.contains(MsFlags::MS_NODEV), "its nodes must open");
        let mqueue = CString::new(t.dev.join("mqueue").as_os_str().as_bytes()).expect("cstring");
        assert!(ops.iter().any(|op| matches!(op,
            MountOp::Mount { step: SetupStep::MountMqueue, target, fstype: Some(f), flags, .. }
                if *target == mqueue && f.as_bytes() == b"mqueue"
                    && flags.contains(MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC))));
    }

    #[test]
    fn defaults_refuse_links_to_the_root() {
        let root = tempfile::tempdir().expect("tempdir");
        std::os::unix::fs::symlink("/", root.path().join("proc")).expect("symlink");
        let e = prepare_defaults(root.path()).expect_err("proc -> /");
        assert!(matches!(e, ContainerError::InvalidMount { .. }));
    }

    #[test]
    fn etc_files_are_skipped_or_created() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("etc/hosts"), "").expect("write");
        std::fs::create_dir(r.join("etc/hostname")).expect("mkdir");
        let files = [
            ("resolv.conf", PathBuf::from("/copy/resolv.conf")),
            ("hosts", PathBuf::from("/copy/hosts")),
            ("hostname", PathBuf::from("/copy/hostname")),
        ];
        let ro = etc_ops(r, true, &files).expect("ops");
        assert_eq!(ro.len(), 1, "read-only: only the existing regular file");
        assert!(!r.join("etc/resolv.conf").exists());
        let rw = etc_ops(r, false, &files).expect("ops");
        assert_eq!(
            rw.len(),
            2,
            "writable: resolv.conf created, the directory skipped"
        );
        assert!(r.join("etc/resolv.conf").is_file());
    }
}
