//! `cargo xtask install [--prefix /usr/local]`: installs vc for containerd and for direct use.
//!
//! - `PREFIX/bin`: `virtc`, `containerd-shim-vc-v2` (release builds), `vc-console-log` (the
//!   console logger vc-host starts next to each VM), and the helper daemons `vhost-device-vsock`
//!   and `virtiofsd` from the tools cache. vc-host looks for the programs it starts in `PATH`,
//!   then in the running program's own directory (`vc_host::hypervisor::tools`), so installed
//!   together they find each other even under containerd, whose environment has no `HOME` (and
//!   so no tools cache) and maybe not `PREFIX/bin` in its `PATH`.
//! - `PREFIX/share/vc/guest-image`: the guest image of `cargo xtask guest-image`, which the
//!   default image lookup finds from `PREFIX/bin` (`vc_host::runtime::guest`).
//!
//! Host dependencies come first (`cargo xtask deps`: QEMU, the daemons, the `vc-vmm` user).
//! Every file is written beside its destination and renamed into place, so a program that is
//! running is replaced, never overwritten. Then the command prints the containerd configuration
//! that names the runtime `vc` (docs/containerd.md).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};
use crate::{deps, image};

/// The shim's package and binary (the "shim" part of issue 12).
pub(crate) const SHIM_PACKAGE: &str = "vc-shim";
pub(crate) const SHIM_BIN: &str = "containerd-shim-vc-v2";
/// The runtime type containerd maps to `containerd-shim-vc-v2`.
pub(crate) const RUNTIME_TYPE: &str = "io.containerd.vc.v2";

/// The release binaries of vc-host that are installed.
const HOST_BINARIES: &[&str] = &["virtc", "vc-console-log"];

/// Options of `cargo xtask install`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Installation prefix: programs go to PREFIX/bin, the guest image to
    /// PREFIX/share/vc/guest-image.
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,
}

/// Where things go under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub bin: PathBuf,
    pub guest_image: PathBuf,
}

impl Layout {
    pub(crate) fn new(prefix: &Path) -> Self {
        Self {
            bin: prefix.join("bin"),
            guest_image: prefix.join("share").join("vc").join("guest-image"),
        }
    }
}

/// What to install: programs (source, installed name) and the guest image's files.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub programs: Vec<(PathBuf, String)>,
    pub image_files: Vec<PathBuf>,
}

/// Copies `src` to `dir/name` through a temporary file in `dir` and a rename.
fn install_file(src: &Path, dir: &Path, name: &str, mode: u32) -> Result<PathBuf> {
    let dst = dir.join(name);
    let tmp = dir.join(format!(".{name}.vc-install.{}", std::process::id()));
    let copy = || -> Result<()> {
        std::fs::copy(src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), dst.display()))
    };
    if let Err(e) = copy() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(dst)
}

/// Installs `plan` under `layout`; returns the installed files.
pub(crate) fn install(plan: &Plan, layout: &Layout) -> Result<Vec<PathBuf>> {
    for dir in [&layout.bin, &layout.guest_image] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut installed = Vec::new();
    for (src, name) in &plan.programs {
        installed.push(install_file(src, &layout.bin, name, 0o755)?);
    }
    for src in &plan.image_files {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} has no file name", src.display()))?;
        installed.push(install_file(src, &layout.guest_image, name, 0o644)?);
    }
    Ok(installed)
}

/// The containerd configuration (version 2, containerd 1.6 and 1.7) that makes the runtime `vc`
/// known to the CRI plugin, for binaries installed in `bin`.
pub(crate) fn containerd_stanza(bin: &Path) -> String {
    let mut s = format!(
        r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vc]
  runtime_type = "{RUNTIME_TYPE}"
  # A privileged pod gets the VM's devices, not the host's.
  privileged_without_host_devices = true
"#
    );
    let standard = [
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/usr/local/sbin",
        "/usr/sbin",
    ];
    if !standard.iter().any(|d| bin == Path::new(d)) {
        s.push_str(&format!(
            "  # {} is not on containerd's usual PATH: name the shim.\n  runtime_path = \"{}\"\n",
            bin.display(),
            bin.join(SHIM_BIN).display()
        ));
    }
    s
}

/// Whether the shim crate is in this checkout.
fn has_shim_crate(ctx: &Ctx) -> bool {
    ctx.workspace
        .join(SHIM_PACKAGE)
        .join("Cargo.toml")
        .is_file()
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let with_shim = has_shim_crate(ctx);
    let prefix = std::path::absolute(&args.prefix)
        .with_context(|| format!("cannot make {} absolute", args.prefix.display()))?;
    let layout = Layout::new(&prefix);
    deps::run(ctx)?;
    let image = image::run(ctx, &image::Args::default())?;

    let mut bins: Vec<&str> = HOST_BINARIES.to_vec();
    let mut cmd = ctx.cargo();
    cmd.args(["build", "--release", "--locked", "--package", "vc-host"]);
    if with_shim {
        cmd.args(["--package", SHIM_PACKAGE]);
        bins.push(SHIM_BIN);
    }
    ctx::step(format!("building {} (release)", bins.join(", ")));
    for bin in &bins {
        cmd.args(["--bin", bin]);
    }
    ctx::run(&mut cmd)?;
    let release = ctx.workspace.join("target").join("release");
    let mut programs: Vec<(PathBuf, String)> = bins
        .iter()
        .map(|bin| (release.join(bin), (*bin).to_owned()))
        .collect();
    for tool in deps::TOOLS {
        let path = ctx.tools_bin().join(tool.bin);
        if !path.is_file() {
            bail!(
                "{} is missing after `cargo xtask deps`: it should have installed it",
                path.display()
            );
        }
        programs.push((path, tool.bin.to_owned()));
    }
    let plan = Plan {
        programs,
        image_files: vec![image.paths.kernel, image.paths.initrd, image.paths.manifest],
    };

    ctx::step(format!("installing into {}", prefix.display()));
    for path in install(&plan, &layout)? {
        eprintln!("    {}", path.display());
    }
    if !with_shim {
        bail!(
            "this checkout has no {SHIM_PACKAGE} crate yet, so {SHIM_BIN} was neither built nor \
             installed (everything else was); update the checkout once the shim has landed"
        );
    }
    ctx::step("containerd configuration (docs/containerd.md)");
    println!(
        "# Add to containerd's config.toml (version = 2), then restart containerd.\n\
         # `ctr run --runtime {RUNTIME_TYPE}` needs no configuration.\n{}",
        containerd_stanza(&layout.bin)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_programs_and_image_under_the_prefix() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).expect("mkdir");
        let file = |name: &str, data: &str| {
            let p = src.join(name);
            std::fs::write(&p, data).expect("write");
            p
        };
        let plan = Plan {
            programs: vec![
                (file("virtc", "v1"), "virtc".to_owned()),
                (file("shim", "s"), SHIM_BIN.to_owned()),
            ],
            image_files: vec![file("vmlinuz", "k"), file("manifest.json", "{}")],
        };
        let prefix = tmp.path().join("prefix");
        let layout = Layout::new(&prefix);
        assert_eq!(layout.guest_image, prefix.join("share/vc/guest-image"));
        let installed = install(&plan, &layout).expect("install");
        assert_eq!(installed.len(), 4);
        let virtc = prefix.join("bin/virtc");
        assert_eq!(std::fs::read_to_string(&virtc).expect("read"), "v1");
        let mode = std::fs::metadata(&virtc)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(prefix.join("bin").join(SHIM_BIN).is_file());
        let kernel = prefix.join("share/vc/guest-image/vmlinuz");
        assert_eq!(std::fs::read_to_string(&kernel).expect("read"), "k");
        let mode = std::fs::metadata(&kernel)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);

        // A reinstall replaces the file (a new inode: a running program keeps its old one) and
        // leaves no temporary file.
        use std::os::unix::fs::MetadataExt as _;
        let before = std::fs::metadata(&virtc).expect("meta").ino();
        std::fs::write(src.join("virtc"), "v2").expect("write");
        install(&plan, &layout).expect("reinstall");
        assert_eq!(std::fs::read_to_string(&virtc).expect("read"), "v2");
        assert_ne!(std::fs::metadata(&virtc).expect("meta").ino(), before);
        let names: Vec<String> = std::fs::read_dir(prefix.join("bin"))
            .expect("readdir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // A missing source fails and leaves no temporary file either.
        let bad = Plan {
            programs: vec![(src.join("nope"), "nope".to_owned())],
            image_files: vec![],
        };
        assert!(install(&bad, &layout).is_err());
        assert!(!prefix.join("bin/nope").exists());
        assert_eq!(
            std::fs::read_dir(prefix.join("bin"))
                .expect("readdir")
                .count(),
            2
        );
    }

    #[test]
    fn the_stanza_names_the_runtime() {
        let s = containerd_stanza(Path::new("/usr/local/bin"));
        assert!(s.contains(r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vc]"#));
        assert!(s.contains(r#"runtime_type = "io.containerd.vc.v2""#));
        assert!(!s.contains("runtime_path"));
        let s = containerd_stanza(Path::new("/opt/vc/bin"));
        assert!(s.contains(r#"runtime_path = "/opt/vc/bin/containerd-shim-vc-v2""#));
        // It is valid TOML.
        let _: toml::Value = toml::from_str(&s).expect("toml");
    }
}
