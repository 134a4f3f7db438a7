//! The `vc-agent` binary: `/init` of the guest, or a normal process for tests.
//!
//! As PID 1: banner, panic hook, mount table, `vc.*` settings, log, the modules
//! vsock needs (all single-threaded), then a multi-thread tokio runtime serving
//! vsock; the other modules load in the background once it listens. Every way
//! out ends in sync + power off; `main` never returns.
//!
//! As a normal process: `vc-agent --listen-unix PATH [--log LEVEL]` serves on a
//! unix socket, with no mounts, no modules and no power off; a `Shutdown`
//! request ends the process.
//!
//! The runtime is multi-threaded (one worker per vCPU): a stream copy that is
//! busy on one vCPU must not delay requests, and the blocking parts (fork and
//! the wait for exec, cgroup and mount work) run on the blocking pool. On a
//! one-vCPU guest this costs one idle thread.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vc_agent::boot;
use vc_agent::config::{self, Config};
use vc_agent::power::{self, error_chain, fatal};
use vc_agent::{Agent, AgentOptions};

/// Grace period given to containers when the VM shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

fn main() {
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    if pid1 {
        boot::console::ensure_stdio();
    }
    boot::console::banner(pid1);
    if pid1 {
        pid1_main()
    } else {
        process_main()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vc-agent")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => fatal(&format!("cannot start the async runtime: {e}")),
    }
}

fn pid1_main() -> ! {
    power::install_panic_hook();
    // Before any mount: pivot_root in containers needs a root with a parent.
    if let Err(e) = vc_agent::container::leave_initramfs() {
        fatal(&error_chain(&e));
    }
    if let Err(e) = boot::mount_all() {
        fatal(&error_chain(&e));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let (config, warnings) = Config::from_cmdline(&cmdline);
    vc_agent::logging::init(config.log_level);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    boot::raise_nofile_limit();
    // What vsock needs now, the rest once the listener is up.
    let (modules, late) = match boot::load_modules() {
        Ok(lists) => lists,
        Err(e) => fatal(&error_chain(&e)),
    };
    tracing::info!(
        modules = modules.len(),
        late = late.len(),
        port = config.port,
        "early setup done"
    );
    let options = AgentOptions::guest(modules, late, config.debug);
    let served = runtime().block_on(async {
        let agent = Agent::new(options).map_err(|e| format!("cannot start the agent: {e}"))?;
        vc_agent::serve_vsock(Arc::clone(&agent), config.port)
            .await
            .map_err(|e| error_chain(&e))?;
        agent.stop_everything(SHUTDOWN_GRACE).await;
        Ok::<(), String>(())
    });
    match served {
        Ok(()) => {
            tracing::info!("powering off");
            power::power_off()
        }
        Err(e) => fatal(&e),
    }
}

struct Args {
    listen_unix: Option<PathBuf>,
    vsock_port: Option<u32>,
    log: Option<String>,
    run_dir: PathBuf,
}

const USAGE: &str =
    "usage: vc-agent (--listen-unix PATH | --listen-vsock PORT) [--log LEVEL] [--run-dir DIR]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen_unix: None,
        vsock_port: None,
        log: None,
        run_dir: std::env::temp_dir().join("vc-agent-run"),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = || words.next().ok_or_else(|| format!("{word} needs a value"));
        match word.as_str() {
            "--listen-unix" => args.listen_unix = Some(PathBuf::from(value()?)),
            "--listen-vsock" => {
                let port = value()?;
                args.vsock_port = Some(port.parse().map_err(|_| format!("bad port {port:?}"))?);
            }
            "--log" => args.log = Some(value()?),
            "--run-dir" => args.run_dir = PathBuf::from(value()?),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.listen_unix.is_none() == args.vsock_port.is_none() {
        return Err("give exactly one of --listen-unix and --listen-vsock".into());
    }
    Ok(args)
}

fn process_main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("vc-agent: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let level = match args.log.as_deref().map(config::parse_level) {
        None => tracing::level_filters::LevelFilter::INFO,
        Some(Some(level)) => level,
        Some(None) => {
            eprintln!("vc-agent: unknown log level; {USAGE}");
            std::process::exit(2);
        }
    };
    vc_agent::logging::init(level);
    let served = runtime().block_on(async {
        let agent = Agent::new(AgentOptions::process(args.run_dir))
            .map_err(|e| format!("cannot start the agent: {e}"))?;
        let result = match (&args.listen_unix, args.vsock_port) {
            (Some(path), _) => vc_agent::serve_unix(Arc::clone(&agent), path).await,
            (None, Some(port)) => vc_agent::serve_vsock(Arc::clone(&agent), port).await,
            (None, None) => Ok(()),
        };
        result.map_err(|e| error_chain(&e))?;
        agent.stop_everything(SHUTDOWN_GRACE).await;
        Ok::<(), String>(())
    });
    if let Err(e) = served {
        fatal(&e);
    }
}
