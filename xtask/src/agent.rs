//! Building guest executables statically: `vc-agent` for the image (and later the benchmarks'
//! minimal init). They are built for the explicit target `x86_64-unknown-linux-gnu` with
//! `+crt-static` (the explicit target keeps build scripts and proc macros dynamic) in a separate
//! target directory, so the host builds in `target/` are not invalidated by the different flags.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use guest_image::elf::{self, Linkage};

use crate::ctx::{self, Ctx};

/// The target triple of guest executables.
pub(crate) const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The package of the agent.
pub(crate) const AGENT_PACKAGE: &str = "vc-agent";

/// A built static executable.
#[derive(Debug, Clone)]
pub(crate) struct StaticBin {
    /// The executable.
    pub path: PathBuf,
    /// The version of its package.
    pub version: String,
}

/// The separate target directory of static guest builds.
pub(crate) fn static_target_dir(ctx: &Ctx) -> PathBuf {
    ctx.workspace.join("target").join("agent-static")
}

/// Builds binary `bin` of workspace package `package` statically in release mode.
pub(crate) fn build_static(ctx: &Ctx, package: &str, bin: &str) -> Result<StaticBin> {
    let target_dir = static_target_dir(ctx);
    ctx::run(
        ctx.cargo()
            .args([
                "build",
                "--release",
                "--package",
                package,
                "--bin",
                bin,
                "--target",
            ])
            .arg(GUEST_TARGET)
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS"),
    )?;
    let path = target_dir.join(GUEST_TARGET).join("release").join(bin);
    let data = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    match elf::x86_64_executable_linkage(&data)
        .with_context(|| format!("{} is not an ELF file", path.display()))?
    {
        Some(Linkage::Static) => {}
        Some(Linkage::Dynamic) => bail!(
            "{} is dynamically linked although built with +crt-static",
            path.display()
        ),
        None => bail!("{} is not an x86-64 executable", path.display()),
    }
    Ok(StaticBin {
        path,
        version: package_version(ctx, package)?,
    })
}

/// The agent, built statically.
pub(crate) fn build_agent(ctx: &Ctx) -> Result<StaticBin> {
    build_static(ctx, AGENT_PACKAGE, AGENT_PACKAGE)
}

/// The version of workspace package `package`, from `cargo metadata`.
pub(crate) fn package_version(ctx: &Ctx, package: &str) -> Result<String> {
    let json = ctx::output(ctx.cargo().args([
        "metadata",
        "--no-deps",
        "--format-version",
        "1",
        "--offline",
    ]))?;
    version_from_metadata(&json, package)
}

fn version_from_metadata(json: &str, package: &str) -> Result<String> {
    let meta: serde_json::Value =
        serde_json::from_str(json).context("cargo metadata printed invalid JSON")?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == package)
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("package {package} is not in the workspace"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lookup() {
        let json = r#"{"packages":[{"name":"vc-proto","version":"0.1.0"},{"name":"vc-agent","version":"0.2.0"}]}"#;
        assert_eq!(
            version_from_metadata(json, "vc-agent").expect("found"),
            "0.2.0"
        );
        assert!(version_from_metadata(json, "nope").is_err());
        assert!(version_from_metadata("{", "vc-agent").is_err());
    }
}
