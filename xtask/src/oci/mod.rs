//! `cargo xtask oci-image`: container images without a registry, for containerd's
//! `ctr image import` and the CRI tests. Writes two OCI image layout archives:
//!
//! - `busybox.tar`, `localhost/vc/busybox:latest`: one layer, the busybox rootfs of
//!   `cargo xtask rootfs`; command `/bin/sh`, the usual `PATH`.
//! - `pause.tar`, `localhost/vc/pause:latest`: the CRI sandbox image. One layer with the empty
//!   directories a container root has, `/etc/passwd`, `/etc/group` and `/pause`, a tiny static
//!   program ([`pause`]) that sleeps until SIGTERM or SIGINT and then exits 0.
//!
//! The archives are deterministic (see [`layer`] and [`layout`]): the same rootfs always gives the
//! same bytes and digests, and an archive whose bytes would not change is not rewritten.

mod layer;
mod layout;
mod pause;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use oci_spec::image::{Config, ConfigBuilder};

use crate::ctx::{self, Ctx};
use crate::rootfs;
use layer::TarWriter;
use layout::Image;

/// The environment variable that tells tests where the archives are.
pub(crate) const OCI_DIR_ENV: &str = "VC_OCI_DIR";
/// The busybox image's name and archive.
pub(crate) const BUSYBOX: (&str, &str) = ("localhost/vc/busybox:latest", "busybox.tar");
/// The pause image's name and archive.
pub(crate) const PAUSE: (&str, &str) = ("localhost/vc/pause:latest", "pause.tar");

/// The `PATH` of both images (the one containers get by default, `vc_host::config::DEFAULT_PATH`).
const PATH_ENV: &str = vc_host::config::DEFAULT_PATH;

/// Options of `cargo xtask oci-image`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Args {
    /// Output directory [default: target/oci in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The default output directory.
pub(crate) fn default_dir(ctx: &Ctx) -> PathBuf {
    ctx.workspace.join("target").join("oci")
}

fn config(cmd: &[&str], entrypoint: Option<&[&str]>) -> Result<Config> {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut config = ConfigBuilder::default()
        .env(vec![PATH_ENV.to_owned()])
        .working_dir("/")
        .cmd(strings(cmd));
    if let Some(entrypoint) = entrypoint {
        config = config.entrypoint(strings(entrypoint));
    }
    Ok(config.build()?)
}

/// The busybox image of the rootfs in `rootfs` (leaving out the rootfs build's stamp file).
fn busybox_image(rootfs: &Path) -> Result<Image> {
    let mut tar = TarWriter::new();
    layer::add_tree(&mut tar, rootfs, &[rootfs::STAMP])?;
    Ok(Image {
        name: BUSYBOX.0.to_owned(),
        config: config(&["/bin/sh"], None)?,
        layers: vec![tar.finish()?],
    })
}

/// The pause image.
fn pause_image() -> Result<Image> {
    let mut tar = TarWriter::new();
    for (dir, mode) in [
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
    ] {
        tar.dir(dir, mode)?;
        if dir == "etc" {
            tar.file("etc/group", 0o644, rootfs::GROUP.as_bytes())?;
            tar.file("etc/passwd", 0o644, rootfs::PASSWD.as_bytes())?;
        }
    }
    tar.file("pause", 0o755, &pause::program())?;
    Ok(Image {
        name: PAUSE.0.to_owned(),
        config: config(&[], Some(&["/pause"]))?,
        layers: vec![tar.finish()?],
    })
}

/// Writes `data` to `path` unless it holds exactly that already; says which.
fn write_if_changed(path: &Path, data: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(false);
    }
    let tmp = path.with_extension(format!("partial.{}", std::process::id()));
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot move {}", path.display()))?;
    Ok(true)
}

/// Writes both archives in `out` from the busybox rootfs in `rootfs` (made by
/// `cargo xtask rootfs`); returns their paths.
pub(crate) fn build(rootfs: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    ctx::step(format!("OCI image archives in {}", out.display()));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut paths = Vec::new();
    for (image, file) in [
        (busybox_image(rootfs)?, BUSYBOX.1),
        (pause_image()?, PAUSE.1),
    ] {
        let archive = layout::layout_archive(&image)?;
        let path = out.join(file);
        let what = if write_if_changed(&path, &archive)? {
            "wrote"
        } else {
            "unchanged:"
        };
        eprintln!(
            "    {what} {} ({}, {} KiB)",
            path.display(),
            image.name,
            archive.len() / 1024
        );
        paths.push(path);
    }
    Ok(paths)
}

/// Runs the command: the rootfs first (`cargo xtask rootfs`), then the archives. Returns the
/// output directory.
pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<PathBuf> {
    let start = Instant::now();
    let rootfs = rootfs::run(ctx, &rootfs::Args::default())?;
    let out = args.out.clone().unwrap_or_else(|| default_dir(ctx));
    build(&rootfs, &out)?;
    eprintln!("    done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::layout::tests::check_layout;
    use super::layout::IMAGE_NAME_ANNOTATION;
    use super::*;

    fn fake_rootfs(root: &Path) {
        rootfs::populate(root, b"busybox", &["bin/sh".into(), "usr/bin/env".into()])
            .expect("populate");
        std::fs::write(root.join(rootfs::STAMP), "stamp").expect("stamp");
    }

    fn entry_names(layer: &[u8]) -> Vec<String> {
        tar::Archive::new(layer)
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn both_archives_parse_and_rebuild_identically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("rootfs");
        fake_rootfs(&root);
        let out = dir.path().join("oci");
        let paths = build(&root, &out).expect("build");
        let first: Vec<Vec<u8>> = paths
            .iter()
            .map(|p| std::fs::read(p).expect("read"))
            .collect();

        let (desc, config, layers) = check_layout(&first[0]);
        let ann = desc.annotations().as_ref().expect("annotations");
        assert_eq!(ann[IMAGE_NAME_ANNOTATION], BUSYBOX.0);
        let c = config.config().as_ref().expect("config");
        assert_eq!(c.cmd().as_deref(), Some(&["/bin/sh".to_owned()][..]));
        assert_eq!(c.env().as_deref(), Some(&[PATH_ENV.to_owned()][..]));
        let names = entry_names(&layers[0]);
        assert!(names.contains(&"bin/busybox".to_owned()), "{names:?}");
        assert!(names.contains(&"usr/bin/env".to_owned()), "{names:?}");
        assert!(
            !names.iter().any(|n| n.contains(rootfs::STAMP)),
            "{names:?}"
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);

        let (desc, config, layers) = check_layout(&first[1]);
        let ann = desc.annotations().as_ref().expect("annotations");
        assert_eq!(ann[IMAGE_NAME_ANNOTATION], PAUSE.0);
        let c = config.config().as_ref().expect("config");
        assert_eq!(c.entrypoint().as_deref(), Some(&["/pause".to_owned()][..]));
        assert!(entry_names(&layers[0]).contains(&"pause".to_owned()));

        // A second build gives the same bytes and does not rewrite the files.
        // (A rewrite renames a new file into place: another inode.)
        let inodes: Vec<u64> = paths
            .iter()
            .map(|p| std::fs::metadata(p).expect("meta").ino())
            .collect();
        std::fs::remove_dir_all(&root).expect("rm");
        fake_rootfs(&root);
        let again = build(&root, &out).expect("build");
        for ((path, old), inode) in again.iter().zip(&first).zip(&inodes) {
            assert_eq!(&std::fs::read(path).expect("read"), old);
            let now = std::fs::metadata(path).expect("meta").ino();
            assert_eq!(now, *inode, "{} was rewritten", path.display());
        }
    }
}
