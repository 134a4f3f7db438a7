//! The default guest kernel: Debian's cloud kernel package, downloaded once with `apt-get download`
//! and unpacked with `dpkg-deb -x` into `<cache>/kernel/<package>/`.
//!
//! The meta package `linux-image-cloud-amd64` depends on the current versioned package (for example
//! `linux-image-6.1.0-56-cloud-amd64`); the choice is remembered in `<cache>/kernel/selected` so a
//! later run needs no apt call at all. `--refresh-kernel` asks apt again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};
use crate::deps;

/// The Debian meta package that names the current cloud kernel.
pub(crate) const META_PACKAGE: &str = "linux-image-cloud-amd64";
const SELECTED_FILE: &str = "selected";
const UNPACKED_STAMP: &str = ".unpacked";

/// A kernel and its module tree.
#[derive(Debug, Clone)]
pub(crate) struct KernelTree {
    /// The bzImage.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// Where it came from, for messages.
    pub origin: String,
}

/// The versioned kernel package named in `apt-cache depends <meta>` output.
pub(crate) fn package_from_depends(out: &str) -> Option<String> {
    out.lines()
        .map(str::trim)
        .filter_map(|l| {
            l.strip_prefix("Depends:")
                .or_else(|| l.strip_prefix("|Depends:"))
        })
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_owned)
}

fn resolve_package() -> Result<String> {
    let query = || {
        Command::new("apt-cache")
            .args(["depends", META_PACKAGE])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|o| package_from_depends(&String::from_utf8_lossy(&o.stdout)))
    };
    if let Some(p) = query() {
        return Ok(p);
    }
    if ctx::is_root() {
        eprintln!("    apt does not know {META_PACKAGE} yet: updating the package lists");
        deps::apt_get_update()?;
        if let Some(p) = query() {
            return Ok(p);
        }
    }
    bail!(
        "cannot find the Debian cloud kernel: `apt-cache depends {META_PACKAGE}` names no kernel \
         package (is this Debian with its main archive configured? as root, run `apt-get update`); \
         or pass your own with `cargo xtask guest-image --kernel PATH --modules DIR`"
    )
}

fn tree_of(unpacked: &Path, package: &str) -> Result<KernelTree> {
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("{package} is not a linux-image package"))?;
    let vmlinuz = unpacked.join("boot").join(format!("vmlinuz-{release}"));
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| unpacked.join(d).join(release))
        .find(|d| d.is_dir())
        .with_context(|| format!("{package} has no module directory for {release}"))?;
    if !vmlinuz.is_file() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    Ok(KernelTree {
        vmlinuz,
        modules_dir,
        origin: format!("Debian package {package}"),
    })
}

/// The Debian cloud kernel, from the cache or downloaded.
pub(crate) fn debian_cloud(ctx: &Ctx, refresh: bool) -> Result<KernelTree> {
    let dir = ctx.cache.join("kernel");
    let selected = dir.join(SELECTED_FILE);
    let remembered = std::fs::read_to_string(&selected)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let package = match remembered {
        Some(p) if !refresh => p,
        _ => resolve_package()?,
    };
    if let Some(tree) = cached(&dir, &package)? {
        return Ok(tree);
    }
    let (package, deb) = match download(&dir, &package) {
        Ok(deb) => (package, deb),
        Err(err) if ctx::is_root() => {
            // The package lists may be old and name a kernel the archive no longer has.
            eprintln!("    {err:#}\n    updating the package lists and asking again");
            deps::apt_get_update()?;
            let package = resolve_package()?;
            if let Some(tree) = cached(&dir, &package)? {
                return Ok(tree);
            }
            let deb = download(&dir, &package)?;
            (package, deb)
        }
        Err(err) => return Err(err),
    };

    let unpacked = dir.join(&package);
    let tmp = dir.join(format!("{package}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot clean {}", tmp.display()))?;
    }
    ctx::step(format!("unpacking {}", deb.display()));
    ctx::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    // Check before publishing: a bad package must not be cached.
    tree_of(&tmp, &package)?;
    if unpacked.exists() {
        std::fs::remove_dir_all(&unpacked)
            .with_context(|| format!("cannot clean {}", unpacked.display()))?;
    }
    std::fs::rename(&tmp, &unpacked)
        .with_context(|| format!("cannot move the kernel to {}", unpacked.display()))?;
    std::fs::write(
        unpacked.join(UNPACKED_STAMP),
        format!("{}\n", deb.display()),
    )
    .context("cannot mark the kernel unpacked")?;
    if let Some(download_dir) = deb.parent() {
        std::fs::remove_dir_all(download_dir)
            .with_context(|| format!("cannot clean {}", download_dir.display()))?;
    }
    cached(&dir, &package)?.context("the unpacked kernel vanished")
}

/// The unpacked `package` in the kernel cache `dir`, remembered as the selected one, if there.
fn cached(dir: &Path, package: &str) -> Result<Option<KernelTree>> {
    let unpacked = dir.join(package);
    if !unpacked.join(UNPACKED_STAMP).is_file() {
        return Ok(None);
    }
    let tree = tree_of(&unpacked, package)?;
    let selected = dir.join(SELECTED_FILE);
    if std::fs::read_to_string(&selected)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(package)
    {
        std::fs::write(&selected, format!("{package}\n"))
            .with_context(|| format!("cannot write {}", selected.display()))?;
    }
    Ok(Some(tree))
}

/// Downloads `package` into `<dir>/download/` and returns the `.deb`.
fn download(dir: &Path, package: &str) -> Result<PathBuf> {
    ctx::step(format!(
        "downloading the guest kernel {package} into {}",
        dir.display()
    ));
    let download = dir.join("download");
    if download.exists() {
        std::fs::remove_dir_all(&download)
            .with_context(|| format!("cannot clean {}", download.display()))?;
    }
    std::fs::create_dir_all(&download)
        .with_context(|| format!("cannot create {}", download.display()))?;
    ctx::run(
        Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(package)
            .current_dir(&download)
            .stdin(Stdio::null()),
    )?;
    std::fs::read_dir(&download)
        .with_context(|| format!("cannot list {}", download.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", download.display()))
}

/// A kernel and module tree given by the caller.
pub(crate) fn custom(kernel: &Path, modules: &Path) -> Result<KernelTree> {
    if !kernel.is_file() {
        bail!("the kernel {} does not exist", kernel.display());
    }
    if !modules.is_dir() {
        bail!("the module directory {} does not exist", modules.display());
    }
    Ok(KernelTree {
        vmlinuz: kernel.to_owned(),
        modules_dir: modules.to_owned(),
        origin: format!(
            "{} with modules from {}",
            kernel.display(),
            modules.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            package_from_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        let alt = "linux-image-cloud-amd64\n |Depends: linux-image-6.12.1-cloud-amd64\n  Depends: linux-image-6.12.0-cloud-amd64\n";
        assert_eq!(
            package_from_depends(alt).as_deref(),
            Some("linux-image-6.12.1-cloud-amd64")
        );
        assert_eq!(package_from_depends(""), None);
        assert_eq!(
            package_from_depends("x\n  Depends: <linux-image-virtual>\n"),
            None
        );
    }

    #[test]
    fn finds_tree_in_unpacked_package() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pkg = "linux-image-6.1.0-9-cloud-amd64";
        std::fs::create_dir_all(dir.path().join("boot")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("usr/lib/modules/6.1.0-9-cloud-amd64"))
            .expect("mkdir");
        std::fs::write(dir.path().join("boot/vmlinuz-6.1.0-9-cloud-amd64"), b"k").expect("write");
        let tree = tree_of(dir.path(), pkg).expect("tree");
        assert!(tree
            .modules_dir
            .ends_with("usr/lib/modules/6.1.0-9-cloud-amd64"));
        assert!(tree_of(dir.path(), "linux-image-other").is_err());
    }
}
