//! The agent's log: `tracing` events formatted as text on stderr, which for PID 1
//! is the console (the host keeps the console in a file). Timestamps are the time
//! since the agent started, which for PID 1 is close to the guest's boot time.

use tracing::level_filters::LevelFilter;

/// Installs the global subscriber at `level`. A second call (tests that start
/// several agents) keeps the first subscriber.
pub fn init(level: LevelFilter) {
    let _already_set = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(false)
        .try_init();
}
