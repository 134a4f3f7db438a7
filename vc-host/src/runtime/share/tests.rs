//! Privileged tests (the suite runs as root) of the share against the real
//! kernel: the export's flags and propagation, links planted where the host
//! resolves, unbinding by record, and refusing to delete through a mount.

use std::os::unix::fs::symlink;

use super::*;

struct Fixture {
    tmp: tempfile::TempDir,
    share: PodShare,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pod = tmp.path().join("pod");
        for d in ["", MOUNTS_DIR, EXPORT_DIR] {
            std::fs::create_dir(pod.join(d)).expect("mkdir");
        }
        let share = PodShare::open(&pod).expect("open");
        Self { tmp, share }
    }

    fn exported() -> Self {
        let f = Self::new();
        for t in EXPORT_TARGETS {
            f.share.export(t).expect("export (needs root)");
        }
        f
    }

    fn pod(&self) -> PathBuf {
        self.share.pod_dir().to_owned()
    }

    /// Undoes everything in reverse, as the runtime does by record.
    fn teardown(&self, targets: &[PathBuf]) {
        for t in targets.iter().rev() {
            self.share.unbind(t).expect("unbind");
        }
        for t in EXPORT_TARGETS.iter().rev() {
            self.share.unbind(Path::new(t)).expect("unbind export");
        }
        assert!(
            mounts_under(self.tmp.path()).is_empty(),
            "{:?}",
            mounts_under(self.tmp.path())
        );
    }
}

fn id(s: &str) -> ContainerId {
    ContainerId::new(s).expect("id")
}

fn errno(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
}

fn mount_at(path: &Path) -> crate::mountinfo::Mount {
    crate::mountinfo::read()
        .expect("mountinfo")
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
        .unwrap_or_else(|| panic!("{} is not a mount point", path.display()))
}

#[test]
fn targets_are_checked() {
    for ok in [
        "mounts",
        "shared",
        "mounts/c1/rootfs",
        "mounts/c1/volumes/3",
    ] {
        check_target(Path::new(ok)).expect(ok);
    }
    for bad in [
        "/etc",
        "../x",
        "mounts/../../etc",
        "mounts/c1",
        "mounts/c1/volumes/03",
        "mounts/c1/rootfs/etc",
        "vm",
        "",
        "mounts/../shared",
    ] {
        assert!(
            matches!(
                check_target(Path::new(bad)),
                Err(ShareError::ForeignTarget { .. })
            ),
            "{bad}"
        );
    }
    let c = id("c1");
    assert!(is_container_target(&rootfs_target(&c), &c));
    assert!(!is_container_target(&rootfs_target(&id("c10")), &c));
}

#[test]
fn export_is_readonly_nosuid_nodev_and_binds_keep_their_flags() {
    let f = Fixture::exported();
    let rootfs = f.tmp.path().join("rootfs");
    let dir = f.tmp.path().join("dir");
    let file = f.tmp.path().join("file");
    std::fs::create_dir(&rootfs).expect("mkdir");
    std::fs::write(rootfs.join("hello"), b"hi").expect("write");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(&file, b"f").expect("write");
    let c = id("c1");
    f.share.bind_rootfs(&c, &rootfs, true).expect("rootfs");
    f.share.bind_volume(&c, 0, &dir, false).expect("dir volume");
    f.share
        .bind_volume(&c, 1, &file, true)
        .expect("file volume");

    let export = f.pod().join(EXPORT_DIR);
    let m = mount_at(&export);
    for o in ["ro", "nosuid", "nodev"] {
        assert!(m.has_option(o), "{o}: {m:?}");
    }
    assert!(
        m.master_group().is_some() && m.shared_group().is_some(),
        "slave and shared: {m:?}"
    );
    // The guest's view: nothing can be made at the levels the host resolves.
    for p in ["x", "c1/x", "c1/volumes/x"] {
        let err = std::fs::create_dir(export.join(p)).expect_err(p);
        assert_eq!(errno(&err), Some(libc::EROFS), "{p}");
        let err = symlink("/etc", export.join(p)).expect_err(p);
        assert_eq!(errno(&err), Some(libc::EROFS), "{p}");
    }
    let err =
        std::fs::rename(export.join("c1/rootfs"), export.join("c1/gone")).expect_err("rename");
    assert!(
        matches!(errno(&err), Some(libc::EROFS | libc::EBUSY)),
        "{err}"
    );
    // The binds propagated with their own flags.
    assert_eq!(
        std::fs::read(export.join("c1/rootfs/hello")).expect("read"),
        b"hi"
    );
    let err = std::fs::write(export.join("c1/rootfs/new"), b"x").expect_err("ro rootfs");
    assert_eq!(errno(&err), Some(libc::EROFS));
    std::fs::write(export.join("c1/volumes/0/new"), b"n").expect("rw volume");
    assert_eq!(std::fs::read(dir.join("new")).expect("read"), b"n");
    let err = std::fs::write(export.join("c1/volumes/1"), b"x").expect_err("ro file volume");
    assert_eq!(errno(&err), Some(libc::EROFS));
    for p in ["c1/rootfs", "c1/volumes/0", "c1/volumes/1"] {
        for base in [MOUNTS_DIR, EXPORT_DIR] {
            let m = mount_at(&f.pod().join(base).join(p));
            assert!(
                m.has_option("nosuid") && m.has_option("nodev"),
                "{base}/{p}: {m:?}"
            );
        }
    }
    assert!(mount_at(&export.join("c1/volumes/0")).has_option("rw"));

    let targets = [
        rootfs_target(&c),
        volume_target(&c, 0),
        volume_target(&c, 1),
    ];
    for t in targets.iter().rev() {
        f.share.unbind(t).expect("unbind");
    }
    assert!(
        !export.join("c1/rootfs/hello").exists(),
        "unbind propagated to the export"
    );
    f.share.remove_dir(&container_dir(&c)).expect("remove");
    assert!(!f.pod().join("mounts/c1").exists());
    f.teardown(&[]);
    assert_eq!(std::fs::read(&file).expect("read"), b"f");
    assert!(rootfs.join("hello").exists() && dir.join("new").exists());
}

/// A process in its own mount namespace with slave propagation, as virtiofsd
/// runs with `--sandbox namespace`, sees binds made after it started.
#[test]
fn binds_propagate_into_a_namespace_made_before_them() {
    use std::io::{BufRead, Write};
    let f = Fixture::exported();
    let rootfs = f.tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    std::fs::write(rootfs.join("hello"), b"hi").expect("write");
    let seen = f.pod().join(EXPORT_DIR).join("c1/rootfs/hello");
    let script = format!(
        "echo ready; read go; cat {0}; echo; read go; test -e {0} && echo still || echo gone",
        seen.display()
    );
    let mut child = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "slave",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "ready\n");
    let c = id("c1");
    f.share.bind_rootfs(&c, &rootfs, false).expect("bind");
    stdin.write_all(b"go\n").expect("write");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "hi\n", "the namespace sees the later bind");
    f.share.unbind(&rootfs_target(&c)).expect("unbind");
    stdin.write_all(b"go\n").expect("write");
    line.clear();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "gone\n", "and its unbind");
    assert!(child.wait().expect("wait").success());
    f.share.remove_dir(&container_dir(&c)).expect("remove");
    f.teardown(&[]);
}

/// Links planted where the host makes its mount points (which a guest cannot
/// reach any more, but a bug or a tampered tree could) are never followed:
/// the bind fails and nothing outside the pod is created, truncated or mounted.
#[test]
fn planted_links_are_not_followed() {
    let f = Fixture::exported();
    let outside = tempfile::tempdir().expect("tempdir");
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"keep").expect("write");
    let rootfs = f.tmp.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("mkdir");
    let vol = f.tmp.path().join("vol");
    std::fs::write(&vol, b"v").expect("write");
    let mounts = f.pod().join(MOUNTS_DIR);

    // A directory link at the container level.
    symlink(outside.path(), mounts.join("dirlink")).expect("symlink");
    // A file link where a file volume goes.
    std::fs::create_dir_all(mounts.join("filelink/volumes")).expect("mkdir");
    symlink(&victim, mounts.join("filelink/volumes/0")).expect("symlink");
    // Nested: a real directory whose `volumes` is a relative link out.
    std::fs::create_dir(mounts.join("nested")).expect("mkdir");
    symlink("../dirlink", mounts.join("nested/volumes")).expect("symlink");
    // A rootfs that is a link.
    std::fs::create_dir(mounts.join("rootlink")).expect("mkdir");
    symlink(outside.path(), mounts.join("rootlink/rootfs")).expect("symlink");

    let results = [
        f.share.bind_rootfs(&id("dirlink"), &rootfs, false),
        f.share.bind_volume(&id("filelink"), 0, &vol, false),
        f.share.bind_volume(&id("nested"), 0, &vol, false),
        f.share.bind_rootfs(&id("rootlink"), &rootfs, false),
    ];
    for r in &results {
        assert!(r.is_err(), "{r:?}");
    }
    assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
    assert_eq!(
        std::fs::read_dir(outside.path()).expect("ls").count(),
        1,
        "nothing made outside"
    );
    let leaked: Vec<_> = crate::mountinfo::read()
        .expect("mountinfo")
        .into_iter()
        .filter(|m| m.mount_point.starts_with(outside.path()))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let pod_mounts = mounts_under(&f.pod());
    assert_eq!(pod_mounts.len(), 2, "only the export: {pod_mounts:?}");

    // Removal removes the links, not what they name.
    for d in ["dirlink", "filelink", "nested", "rootlink"] {
        f.share.remove_dir(&Path::new(MOUNTS_DIR).join(d)).expect(d);
    }
    assert_eq!(std::fs::read(&victim).expect("read"), b"keep");
    f.teardown(&[]);

    // A link at the root of the tree: the export itself refuses.
    let g = Fixture::new();
    std::fs::remove_dir(g.pod().join(MOUNTS_DIR)).expect("rmdir");
    symlink(outside.path(), g.pod().join(MOUNTS_DIR)).expect("symlink");
    assert!(g.share.export(MOUNTS_DIR).is_err());
    assert!(g.share.bind_rootfs(&id("c1"), &rootfs, false).is_err());
    assert!(mounts_under(outside.path()).is_empty());
    assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 1);
}

/// Unbinding by record: a recorded bind never made is fine, a made one is
/// undone, and a directory with a mount left below is refused, not deleted.
#[test]
fn unbind_by_record_and_refuse_to_remove_through_a_mount() {
    let f = Fixture::exported();
    let dir = f.tmp.path().join("dir");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("precious"), b"p").expect("write");
    let c = id("c1");
    // Recorded, then the bind failed before it was made.
    f.share
        .unbind(&volume_target(&c, 5))
        .expect("nothing there");
    f.share.bind_volume(&c, 0, &dir, false).expect("bind");
    let err = f
        .share
        .remove_dir(&container_dir(&c))
        .expect_err("mounted below");
    assert!(matches!(err, ShareError::StillMounted { .. }), "{err}");
    assert!(dir.join("precious").exists());
    // Stacked twice (a retried bind): both come off.
    f.share.bind_volume(&c, 1, &dir, false).expect("bind");
    let one = f.pod().join(volume_target(&c, 1));
    nix::mount::mount(
        Some(&dir),
        &one,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .expect("stack");
    f.share
        .unbind(&volume_target(&c, 1))
        .expect("unbind stacked");
    assert!(!is_mount_point(&one));
    assert!(
        f.share.unbind(Path::new("/etc")).is_err(),
        "foreign target refused"
    );
    f.share.unbind(&volume_target(&c, 0)).expect("unbind");
    f.share.remove_dir(&container_dir(&c)).expect("remove");
    assert!(dir.join("precious").exists());
    f.teardown(&[]);
}
