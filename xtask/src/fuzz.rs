//! `cargo xtask fuzz`: runs the fuzz targets of `fuzz/` with libFuzzer, each for a bounded
//! time, one after the other on one core.
//!
//! - Needs a nightly toolchain (cargo-fuzz builds with `-Z` flags); without one it fails naming
//!   `rustup toolchain install nightly`. Installs cargo-fuzz into the tools directory with
//!   `cargo install --locked` when missing, like `cargo xtask deps` installs the helper daemons.
//! - Refreshes the seeds (`fuzz/corpus/<target>/seed-*`, made by `vc_fuzz::seeds` from the
//!   current code), then fuzzes in a scratch copy of the saved corpus under
//!   `target/fuzz/corpus/<target>/`, so the repository only changes when asked: with `--save`, the
//!   inputs that reach new coverage are merged into `fuzz/corpus/<target>/` (libFuzzer's
//!   `-merge=1`).
//! - A finding stops the run with the input saved under `target/fuzz/artifacts/<target>/` and the
//!   command that replays it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};
use crate::deps::{self, Tool};

/// cargo-fuzz, installed like the helper daemons.
const CARGO_FUZZ: Tool = Tool {
    krate: "cargo-fuzz",
    req: "0.13.2",
    accept_prefix: "0.13.",
    bin: "cargo-fuzz",
};

/// The toolchain cargo-fuzz builds with.
const NIGHTLY: &str = "nightly";

/// Longest one input may run before libFuzzer reports a hang, in seconds.
const INPUT_TIMEOUT_S: u32 = 30;

/// Options of `cargo xtask fuzz`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// How long to fuzz each target, in seconds.
    #[arg(long, default_value_t = 30)]
    pub seconds: u32,
    /// Merge the inputs that reach new coverage into the saved corpus `fuzz/corpus/<target>/`.
    #[arg(long)]
    pub save: bool,
    /// The targets to run (default: all).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let targets: Vec<&vc_fuzz::Target> = if args.targets.is_empty() {
        vc_fuzz::TARGETS.iter().collect()
    } else {
        args.targets
            .iter()
            .map(|name| {
                vc_fuzz::target(name).with_context(|| {
                    format!("no fuzz target {name:?}; the targets are {}", names())
                })
            })
            .collect::<Result<_>>()?
    };
    check_nightly(ctx)?;
    let cargo_fuzz = deps::ensure_tool(ctx, &CARGO_FUZZ)?;
    let fuzz_dir = ctx.workspace.join("fuzz");
    write_seeds(&fuzz_dir)?;
    let scratch = ctx.workspace.join("target").join("fuzz");
    for (i, target) in targets.iter().enumerate() {
        ctx::step(format!(
            "[{}/{}] fuzzing {} for {} s: {}",
            i + 1,
            targets.len(),
            target.name,
            args.seconds,
            target.what
        ));
        let saved = fuzz_dir.join("corpus").join(target.name);
        let work = scratch.join("corpus").join(target.name);
        let artifacts = scratch.join("artifacts").join(target.name);
        for dir in [&work, &artifacts] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        copy_files(&saved, &work)?;
        let start = Instant::now();
        let mut cmd = fuzz_command(ctx, &cargo_fuzz, target.name);
        cmd.arg(&work).arg("--").args([
            format!("-max_total_time={}", args.seconds),
            format!("-timeout={INPUT_TIMEOUT_S}"),
            "-print_final_stats=1".to_owned(),
        ]);
        cmd.arg(format!("-artifact_prefix={}/", artifacts.display()));
        if let Err(e) = ctx::run(&mut cmd) {
            bail!(
                "{e:#}\nthe fuzzer found a failing input of {name}: it is in {dir}; replay it with \
                 `cargo +{NIGHTLY} fuzz run --fuzz-dir fuzz/libfuzzer -a -s none {name} {dir}/<file>`, \
                 then fix the bug and add the input to fuzz/corpus/{name}/ as a regression test",
                name = target.name,
                dir = artifacts.display(),
            );
        }
        eprintln!(
            "    {} ran {:.0} s; its corpus has {} inputs",
            target.name,
            start.elapsed().as_secs_f64(),
            count_files(&work)?
        );
        if args.save {
            save(ctx, &cargo_fuzz, target.name, &saved, &work, &scratch)?;
        }
    }
    Ok(())
}

/// Replaces the found inputs of the saved corpus with a small set that covers every edge the
/// saved and the scratch corpus reach (libFuzzer's `-set_cover_merge=1`, counting edges, not hit
/// counts). Seeds (`seed-*`) and regression inputs (`regression-*`) are kept as they are.
fn save(
    ctx: &Ctx,
    cargo_fuzz: &Path,
    target: &str,
    saved: &Path,
    work: &Path,
    scratch: &Path,
) -> Result<()> {
    let merged = scratch.join("merged").join(target);
    if merged.exists() {
        std::fs::remove_dir_all(&merged)
            .with_context(|| format!("cannot remove {}", merged.display()))?;
    }
    std::fs::create_dir_all(&merged)
        .with_context(|| format!("cannot create {}", merged.display()))?;
    let mut merge = fuzz_command(ctx, cargo_fuzz, target);
    merge.arg(&merged).arg(saved).arg(work).args([
        "--",
        "-set_cover_merge=1",
        "-use_counters=0",
        &format!("-timeout={INPUT_TIMEOUT_S}"),
    ]);
    ctx::run(&mut merge)?;
    let before = count_files(saved)?;
    for file in files(saved)? {
        if !is_kept(&file) {
            std::fs::remove_file(&file)
                .with_context(|| format!("cannot remove {}", file.display()))?;
        }
    }
    copy_files(&merged, saved)?;
    eprintln!(
        "    saved corpus of {target}: {before} -> {} inputs",
        count_files(saved)?
    );
    Ok(())
}

/// Seeds and regression inputs stay in the saved corpus whatever they cover.
fn is_kept(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("seed-") || n.starts_with("regression-"))
}

fn names() -> String {
    vc_fuzz::TARGETS
        .iter()
        .map(|t| t.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Fails clearly when there is no nightly toolchain.
fn check_nightly(ctx: &Ctx) -> Result<()> {
    let found = Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--version"])
        .current_dir(&ctx.workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        bail!(
            "cargo xtask fuzz needs a nightly Rust toolchain (libFuzzer's instrumentation uses \
             -Z flags) and none is installed: install it with `rustup toolchain install {NIGHTLY}`; \
             the saved corpus also runs on stable as a test: `cargo test -p vc-fuzz`"
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz run` of `target` with the project's flags: debug assertions (so that
/// integer overflow is a finding) and no sanitizer (the code under test is safe Rust, and the
/// allocation caps are checked by the targets themselves).
fn fuzz_command(ctx: &Ctx, cargo_fuzz: &Path, target: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    cmd.current_dir(&ctx.workspace)
        .env("RUSTUP_TOOLCHAIN", NIGHTLY)
        // cargo-fuzz runs `$CARGO` when set, which `cargo xtask` sets to the stable cargo.
        .env_remove("CARGO")
        .args(["fuzz", "run", "--fuzz-dir", "fuzz/libfuzzer"])
        .args(["--debug-assertions", "--sanitizer", "none", "--target-dir"])
        .arg(ctx.workspace.join("target").join("fuzz").join("build"))
        .arg(target)
        .stdin(Stdio::null());
    cmd
}

/// Writes the seeds of every target as `seed-<name>` files where they differ.
fn write_seeds(fuzz_dir: &Path) -> Result<()> {
    for seed in vc_fuzz::seeds::seeds() {
        let dir = fuzz_dir.join("corpus").join(seed.target);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("seed-{}", seed.name));
        if std::fs::read(&path).ok().as_deref() != Some(seed.bytes.as_slice()) {
            std::fs::write(&path, &seed.bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            out.push(path);
        }
    }
    Ok(out)
}

fn count_files(dir: &Path) -> Result<usize> {
    files(dir).map(|f| f.len())
}

/// Copies every file of `from` into `to` (same names).
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    for file in files(from)? {
        let name = file.file_name().context("a file has a name")?;
        std::fs::copy(&file, to.join(name))
            .with_context(|| format!("cannot copy {}", file.display()))?;
    }
    Ok(())
}
