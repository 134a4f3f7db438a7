//! `cargo xtask rootfs`: a minimal container root filesystem from busybox-static, for tests and
//! the demo: `bin/busybox` with a symbolic link per applet (at the paths `busybox --list-full`
//! gives), `etc/passwd` and `etc/group` with `root` (0) and `nobody` (1000), and empty `dev`,
//! `proc`, `sys`, `tmp`, `root` directories. Rebuilt only when busybox or this layout changes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use guest_image::elf::{self, Linkage};
use guest_image::hash::sha256_hex;

use crate::ctx::{self, Ctx};

/// Options of `cargo xtask rootfs`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Args {
    /// Output directory [default: target/rootfs/busybox in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

const LAYOUT_VERSION: u32 = 1;
pub(crate) const STAMP: &str = ".vc-rootfs";

pub(crate) const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:1000:1000:nobody:/nonexistent:/bin/sh\n";
pub(crate) const GROUP: &str = "root:x:0:\nnobody:x:1000:\n";

fn find_busybox() -> Result<PathBuf> {
    let candidates = [
        PathBuf::from("/bin/busybox"),
        PathBuf::from("/usr/bin/busybox"),
    ];
    let path = candidates
        .into_iter()
        .find(|p| p.is_file())
        .or_else(|| ctx::on_path("busybox"))
        .context(
            "busybox is not installed: run `cargo xtask deps` (Debian package busybox-static)",
        )?;
    let data = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    match elf::x86_64_executable_linkage(&data) {
        Ok(Some(Linkage::Static)) => Ok(path),
        _ => bail!(
            "{} is not a static x86-64 executable: install busybox-static (`cargo xtask deps`)",
            path.display()
        ),
    }
}

/// Where the link for applet path `rel` (like `usr/bin/env`) points: `bin/busybox`, relative.
pub(crate) fn link_target(rel: &str) -> String {
    let depth = rel.matches('/').count();
    if depth == 1 && rel.starts_with("bin/") {
        "busybox".to_owned()
    } else {
        format!("{}bin/busybox", "../".repeat(depth))
    }
}

/// Applet paths from `busybox --list-full`, keeping only safe relative paths under bin/sbin/usr.
pub(crate) fn applet_paths(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|p| {
            (p.starts_with("bin/") || p.starts_with("sbin/") || p.starts_with("usr/"))
                && *p != "bin/busybox"
                && !p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
        })
        .map(str::to_owned)
        .collect()
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<PathBuf> {
    let start = Instant::now();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::default_rootfs_dir(ctx));
    let busybox = find_busybox()?;
    let data =
        std::fs::read(&busybox).with_context(|| format!("cannot read {}", busybox.display()))?;
    let stamp = format!("layout {LAYOUT_VERSION}\nbusybox {}\n", sha256_hex(&data));
    if std::fs::read_to_string(out.join(STAMP)).ok().as_deref() == Some(stamp.as_str()) {
        eprintln!("==> rootfs {} is up to date", out.display());
        return Ok(out);
    }

    ctx::step(format!("building the busybox rootfs in {}", out.display()));
    let list = ctx::output(Command::new(&busybox).arg("--list-full"))?;
    let applets = applet_paths(&list);
    if applets.is_empty() {
        bail!("`{} --list-full` listed no applet", busybox.display());
    }
    let parent = out.parent().context("the rootfs directory has no parent")?;
    std::fs::create_dir_all(parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    // Named after this process: a concurrent `cargo xtask rootfs` builds its own copy.
    let tmp = out.with_extension(format!("partial.{}", std::process::id()));
    remove_if_exists(&tmp)?;
    populate(&tmp, &data, &applets)?;
    std::fs::write(tmp.join(STAMP), &stamp).context("cannot write the rootfs stamp")?;
    remove_if_exists(&out)?;
    if let Err(err) = std::fs::rename(&tmp, &out) {
        remove_if_exists(&tmp)?;
        // A concurrent run may have put the same rootfs in place first.
        if std::fs::read_to_string(out.join(STAMP)).ok().as_deref() != Some(stamp.as_str()) {
            return Err(err)
                .with_context(|| format!("cannot move the rootfs to {}", out.display()));
        }
    }
    eprintln!(
        "    {} applets, done in {:.1} s",
        applets.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

pub(crate) fn populate(root: &Path, busybox: &[u8], applets: &[String]) -> Result<()> {
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("root", 0o700),
    ] {
        mkdir(&root.join(dir), mode)?;
    }
    let bin = root.join("bin/busybox");
    std::fs::write(&bin, busybox).with_context(|| format!("cannot write {}", bin.display()))?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot set the mode of {}", bin.display()))?;
    for rel in applets {
        let link = root.join(rel);
        if let Some(dir) = link.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::os::unix::fs::symlink(link_target(rel), &link)
            .with_context(|| format!("cannot create the link {}", link.display()))?;
    }
    std::fs::write(root.join("etc/passwd"), PASSWD).context("cannot write etc/passwd")?;
    std::fs::write(root.join("etc/group"), GROUP).context("cannot write etc/group")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets_are_relative() {
        assert_eq!(link_target("bin/sh"), "busybox");
        assert_eq!(link_target("sbin/ip"), "../bin/busybox");
        assert_eq!(link_target("usr/bin/env"), "../../bin/busybox");
    }

    #[test]
    fn applet_list_is_filtered() {
        let list = "usr/bin/[\nbin/busybox\nlinuxrc\nbin/sh\n../etc/x\nsbin//ip\n";
        assert_eq!(applet_paths(list), ["usr/bin/[", "bin/sh"]);
    }

    #[test]
    fn populates_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        populate(&root, b"bb", &["bin/sh".into(), "usr/bin/env".into()]).expect("populate");
        assert_eq!(
            std::fs::read(root.join("usr/bin/env")).expect("via link"),
            b"bb"
        );
        assert_eq!(std::fs::read(root.join("bin/sh")).expect("via link"), b"bb");
        let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("passwd");
        assert!(passwd.starts_with("root:x:0:0:"));
        assert!(passwd.contains("nobody:x:1000:1000:"));
        let tmp_mode = std::fs::metadata(root.join("tmp"))
            .expect("tmp")
            .permissions()
            .mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
    }
}
