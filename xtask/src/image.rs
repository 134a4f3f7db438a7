//! `cargo xtask guest-image`: static agent + kernel + modules -> `<out>/{vmlinuz,initrd.img,manifest.json}`.
//! The image logic is in the `guest-image` crate; this command gathers the inputs.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use guest_image::{BuildOutcome, ImageInputs, MAX_INITRD_SIZE};

use crate::ctx::{self, Ctx};
use crate::{agent, kernel};

/// Options of `cargo xtask guest-image`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct Args {
    /// Your own kernel image (bzImage) instead of the Debian cloud kernel.
    #[arg(long, requires = "modules", value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The module tree of that kernel (for example `/lib/modules/<release>`).
    #[arg(long, requires = "kernel", value_name = "DIR")]
    pub modules: Option<PathBuf>,
    /// Output directory [default: target/guest-image in the workspace].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Ask apt again which Debian cloud kernel is current.
    #[arg(long)]
    pub refresh_kernel: bool,
}

pub(crate) fn run(ctx: &Ctx, args: &Args) -> Result<BuildOutcome> {
    let start = Instant::now();
    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| guest_image::default_image_dir(&ctx.workspace));

    ctx::step("building vc-agent (static, release)");
    let agent = agent::build_agent(ctx)?;

    let tree = match (&args.kernel, &args.modules) {
        (Some(k), Some(m)) => kernel::custom(k, m)?,
        _ => kernel::debian_cloud(ctx, args.refresh_kernel)?,
    };

    ctx::step(format!(
        "assembling the guest image in {}",
        out_dir.display()
    ));
    let inputs = ImageInputs::new(
        tree.vmlinuz.clone(),
        tree.modules_dir.clone(),
        agent.path.clone(),
        agent.version.clone(),
    );
    let outcome = guest_image::build(&inputs, &out_dir)
        .with_context(|| format!("cannot build the guest image from {}", tree.origin))?;

    let m = &outcome.manifest;
    let initrd_size = m
        .files
        .get(guest_image::INITRD_FILE)
        .map(|f| f.size)
        .unwrap_or_default();
    eprintln!(
        "    {} in {:.1} s: kernel {} ({}), agent {} (protocol {}), {} modules{}",
        if outcome.rebuilt {
            "built"
        } else {
            "up to date"
        },
        start.elapsed().as_secs_f64(),
        m.kernel_version,
        tree.origin,
        m.agent_version,
        m.protocol_version,
        m.modules.len(),
        if m.builtin_modules.is_empty() {
            String::new()
        } else {
            format!(" (built in: {})", m.builtin_modules.join(", "))
        }
    );
    eprintln!(
        "    load order: {}",
        m.modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    eprintln!(
        "    initrd {} bytes ({:.2} MiB compressed, limit {} MiB)",
        initrd_size,
        initrd_size as f64 / (1024.0 * 1024.0),
        MAX_INITRD_SIZE / (1024 * 1024)
    );
    eprintln!(
        "    {}\n    {}\n    {}",
        outcome.paths.kernel.display(),
        outcome.paths.initrd.display(),
        outcome.paths.manifest.display()
    );
    Ok(outcome)
}
