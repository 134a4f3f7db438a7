//! virtc: the example tool of vc. Each invocation is its own process; pods and
//! containers live in the state store, so one call can create a pod and later
//! ones start, list or delete it.

mod cli;
mod container;
mod pod;
mod pool;
mod print;
mod relay;
mod run;

use std::process::ExitCode;

use clap::Parser;
use vc_host::config::RuntimeConfig;
use vc_host::Runtime;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

/// Prints the error chain once, on stderr, with control characters escaped:
/// errors carry console tails and agent messages, which the guest wrote.
fn fail(error: &anyhow::Error) -> ExitCode {
    eprintln!("virtc: error: {}", shown(error));
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {}", shown(cause));
    }
    ExitCode::from(125)
}

/// An error's message made safe for a terminal (see [`vc_proto::text`]).
pub(crate) fn shown(error: &dyn std::fmt::Display) -> String {
    vc_proto::text::escape_text(&error.to_string())
}

fn init_logging(level: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level.unwrap_or("warn")))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
        // netlink-packet-route warns on every link dump of a kernel newer than
        // it knows (harmless attribute sizes): keep pod networking's stderr clean.
        .add_directive(
            "netlink_packet_route=error"
                .parse()
                .expect("a valid static directive"),
        );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = RuntimeConfig::default();
    if let Some(root) = cli.root {
        config.root = root;
    }
    if let Some(dir) = cli.image_dir {
        config.guest_image_dir = dir;
    }
    let runtime = Runtime::new(config)?;
    let out = print::Printer { json: cli.json };
    match cli.command {
        Command::Pod(cmd) => pod::run(&runtime, &out, cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
        Command::Container(cmd) => container::run(&runtime, &out, cmd).await,
        Command::Run(args) => run::run(&runtime, &out, *args).await,
        Command::Pool(cmd) => pool::run(&runtime, &out, cmd)
            .await
            .map(|()| ExitCode::SUCCESS),
    }
}
