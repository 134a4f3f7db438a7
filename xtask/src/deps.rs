//! `cargo xtask deps`: makes the host ready, idempotently and quickly when all is there.
//!
//! - Debian packages (installed with apt-get when missing and running as root on Debian/Ubuntu;
//!   elsewhere a message names what to install): QEMU, busybox-static, iproute2 (the network
//!   tests' fixtures), the libraries that virtiofsd links against, containerd and protobuf-compiler (the containerd tests), and e2fsprogs (ext4 images
//!   for the block device tests).
//! - Helper daemons built with `cargo install --locked --root <cache>/tools`: vhost-device-vsock
//!   (hybrid vsock) and virtiofsd (the shared filesystem), reused when present.
//! - The unprivileged host user QEMU and vhost-device-vsock run as (`vc-vmm`): a system user
//!   with its own group, no home and a nologin shell, in group `kvm` where that exists; made
//!   with `useradd` when missing.
//!
//! The check when everything is present reads a few files and runs one `dpkg-query`: no apt and
//! no cargo.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};

/// Debian packages the project needs, and what for.
pub(crate) const APT_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "qemu-system-x86_64, the hypervisor"),
    ("busybox-static", "the container rootfs of tests and demo"),
    ("libseccomp-dev", "building virtiofsd"),
    ("libcap-ng-dev", "building virtiofsd"),
    (
        "iproute2",
        "ip and tc in the network tests' fixtures and checks",
    ),
    (
        "e2fsprogs",
        "mkfs.ext4 -d and debugfs, for the ext4 disk images of the block device tests",
    ),
    (
        "containerd",
        "containerd 1.6 and ctr, which the shim's end-to-end tests drive",
    ),
    (
        "protobuf-compiler",
        "protoc, which builds the CRI client (k8s-cri) of the CRI tests",
    ),
];

/// A helper built with `cargo install`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tool {
    /// The crate on crates.io.
    pub krate: &'static str,
    /// The version requirement given to `cargo install`.
    pub req: &'static str,
    /// Installed versions starting with this are accepted.
    pub accept_prefix: &'static str,
    /// The executable it installs.
    pub bin: &'static str,
}

/// The helper daemons.
pub(crate) const TOOLS: &[Tool] = &[
    Tool {
        krate: "vhost-device-vsock",
        req: "0.3.0",
        accept_prefix: "0.3.",
        bin: "vhost-device-vsock",
    },
    Tool {
        krate: "virtiofsd",
        req: "^1",
        accept_prefix: "1.",
        bin: "virtiofsd",
    },
];

pub(crate) fn run(ctx: &Ctx) -> Result<()> {
    let start = Instant::now();
    ctx::step("checking host dependencies");
    let installed_apt = ensure_apt_packages()?;
    ensure_tools(ctx)?;
    ensure_vmm_user()?;
    eprintln!(
        "    all present{} ({:.2} s): qemu-system-x86_64, busybox, {}",
        if installed_apt { " after install" } else { "" },
        start.elapsed().as_secs_f64(),
        TOOLS
            .iter()
            .map(|t| ctx.tools_bin().join(t.bin).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn is_debian_like() -> bool {
    Path::new("/usr/bin/dpkg-query").exists() && Path::new("/usr/bin/apt-get").exists()
}

/// Package names from `dpkg-query -W -f '${Package} ${db:Status-Status}\n'` output that are
/// installed.
pub(crate) fn installed_packages(dpkg_query_out: &str) -> BTreeSet<String> {
    dpkg_query_out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, status)| status.trim() == "installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name).to_owned())
        .collect()
}

/// Returns whether something was installed.
fn ensure_apt_packages() -> Result<bool> {
    if !is_debian_like() {
        let mut missing = Vec::new();
        if ctx::on_path("qemu-system-x86_64").is_none() {
            missing.push("QEMU for x86-64 (qemu-system-x86_64)");
        }
        if ctx::on_path("busybox").is_none() {
            missing.push("a static busybox");
        }
        if !missing.is_empty() {
            bail!(
                "this is not Debian or Ubuntu, so `cargo xtask deps` cannot install packages; install {} \
                 (and the libseccomp and libcap-ng development files to build virtiofsd)",
                missing.join(" and ")
            );
        }
        return Ok(false);
    }
    let names: Vec<&str> = APT_PACKAGES.iter().map(|(n, _)| *n).collect();
    let out = Command::new("dpkg-query")
        .arg("-W")
        .arg("-f=${Package} ${db:Status-Status}\n")
        .args(&names)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query")?;
    let installed = installed_packages(&String::from_utf8_lossy(&out.stdout));
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !installed.contains(*n))
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    for (name, why) in APT_PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
        eprintln!("    missing Debian package {name}: {why}");
    }
    if !ctx::is_root() {
        bail!(
            "Debian packages missing: {list}; run `cargo xtask deps` as root, or install them with \
             `sudo apt-get install --no-install-recommends {list}`",
            list = missing.join(" ")
        );
    }
    ctx::step(format!("installing {} with apt-get", missing.join(" ")));
    apt_get_update()?;
    ctx::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .stdin(Stdio::null()),
    )?;
    Ok(true)
}

/// `apt-get update`, as root.
pub(crate) fn apt_get_update() -> Result<()> {
    ctx::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["update", "-q"])
            .stdin(Stdio::null()),
    )
}

/// The `useradd` arguments that make the VMM user `name`, in group `kvm` when the host has one.
pub(crate) fn useradd_args(name: &str, kvm_group: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "--comment",
        "vc QEMU and vhost-device-vsock",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if kvm_group {
        args.extend(["--groups".to_owned(), "kvm".to_owned()]);
    }
    args.push(name.to_owned());
    args
}

/// Creates the unprivileged user QEMU runs as, when missing.
fn ensure_vmm_user() -> Result<()> {
    let name = vc_host::hypervisor::DEFAULT_VMM_USER;
    if nix::unistd::User::from_name(name)
        .with_context(|| format!("cannot look up host user {name}"))?
        .is_some()
    {
        return Ok(());
    }
    if !ctx::is_root() {
        bail!(
            "host user {name} (QEMU runs as it) is missing; run `cargo xtask deps` as root, or \
             `sudo useradd {}`",
            useradd_args(name, false).join(" ")
        );
    }
    let kvm = nix::unistd::Group::from_name("kvm")
        .context("cannot look up group kvm")?
        .is_some();
    ctx::step(format!("creating host user {name} for QEMU"));
    ctx::run(
        Command::new("useradd")
            .args(useradd_args(name, kvm))
            .stdin(Stdio::null()),
    )
}

/// `(crate, version)` pairs recorded in cargo's `.crates.toml` of an install root.
pub(crate) fn installed_crates(crates_toml: &str) -> Vec<(String, String)> {
    crates_toml
        .lines()
        .filter_map(|l| l.strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .filter_map(|key| {
            let mut words = key.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

fn tool_present(ctx: &Ctx, tool: &Tool, recorded: &[(String, String)]) -> bool {
    ctx.tools_bin().join(tool.bin).is_file()
        && recorded
            .iter()
            .any(|(k, v)| k == tool.krate && v.starts_with(tool.accept_prefix))
}

/// The `(crate, version)` pairs recorded in the tools root.
fn recorded_tools(ctx: &Ctx) -> Vec<(String, String)> {
    let crates_toml = ctx.tools_root().join(".crates.toml");
    std::fs::read_to_string(&crates_toml)
        .map(|t| installed_crates(&t))
        .unwrap_or_default()
}

fn ensure_tools(ctx: &Ctx) -> Result<()> {
    let recorded = recorded_tools(ctx);
    let missing: Vec<&Tool> = TOOLS
        .iter()
        .filter(|t| !tool_present(ctx, t, &recorded))
        .collect();
    for (i, tool) in missing.iter().enumerate() {
        ctx::step(format!(
            "[{}/{}] building {}@{} with cargo install into {} (a few minutes; cargo shows its progress)",
            i + 1,
            missing.len(),
            tool.krate,
            tool.req,
            ctx.tools_root().display()
        ));
        install(ctx, tool)?;
    }
    Ok(())
}

/// Installs `tool` into the tools root unless it is there already; returns
/// its executable.
pub(crate) fn ensure_tool(ctx: &Ctx, tool: &Tool) -> Result<std::path::PathBuf> {
    if !tool_present(ctx, tool, &recorded_tools(ctx)) {
        ctx::step(format!(
            "building {}@{} with cargo install into {} (a few minutes; cargo shows its progress)",
            tool.krate,
            tool.req,
            ctx.tools_root().display()
        ));
        install(ctx, tool)?;
    }
    Ok(ctx.tools_bin().join(tool.bin))
}

/// `cargo install --locked` of `tool` into the tools root.
fn install(ctx: &Ctx, tool: &Tool) -> Result<()> {
    std::fs::create_dir_all(ctx.tools_root())
        .with_context(|| format!("cannot create {}", ctx.tools_root().display()))?;
    // Run outside the workspace so its cargo configuration does not apply.
    let mut cmd = Command::new(&ctx.cargo);
    cmd.args(["install", "--locked", "--root"])
        .arg(ctx.tools_root())
        .arg(format!("{}@{}", tool.krate, tool.req))
        .current_dir(&ctx.cache)
        .stdin(Stdio::null());
    if ctx.tools_bin().join(tool.bin).exists() {
        // A binary of unknown version is in the way: replace it.
        cmd.arg("--force");
    }
    ctx::run(&mut cmd)?;
    if !ctx.tools_bin().join(tool.bin).is_file() {
        bail!(
            "cargo install of {} did not produce {}",
            tool.krate,
            ctx.tools_bin().join(tool.bin).display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dpkg_query() {
        let out = "busybox-static installed\nqemu-system-x86 not-installed\nlibcap-ng-dev:amd64 installed\n\n";
        let set = installed_packages(out);
        assert!(set.contains("busybox-static"));
        assert!(set.contains("libcap-ng-dev"));
        assert!(!set.contains("qemu-system-x86"));
    }

    #[test]
    fn the_vmm_user_is_a_system_user_without_home_or_login() {
        let args = useradd_args("vc-vmm", false);
        assert_eq!(args.last().map(String::as_str), Some("vc-vmm"));
        for flag in ["--system", "--no-create-home", "/usr/sbin/nologin"] {
            assert!(args.iter().any(|a| a == flag), "{flag}: {args:?}");
        }
        assert!(!args.iter().any(|a| a == "kvm"));
        let with_kvm = useradd_args("vc-vmm", true);
        assert!(with_kvm.windows(2).any(|w| w == ["--groups", "kvm"]));
    }

    #[test]
    fn parses_crates_toml() {
        let text = r#"[v1]
"vhost-device-vsock 0.3.0 (registry+https://example.invalid/index)" = ["vhost-device-vsock"]
"virtiofsd 1.14.0 (registry+https://example.invalid/index)" = ["virtiofsd"]
"#;
        assert_eq!(
            installed_crates(text),
            [
                ("vhost-device-vsock".to_owned(), "0.3.0".to_owned()),
                ("virtiofsd".to_owned(), "1.14.0".to_owned())
            ]
        );
    }
}
