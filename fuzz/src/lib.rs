//! The fuzz targets of vc: what the guest and the user control, fed with
//! arbitrary bytes.
//!
//! Each target is a plain function over `&[u8]` in this crate, run two ways
//! that cannot drift apart:
//!
//! - by libFuzzer, through the one-line binaries of `fuzz/libfuzzer/`
//!   (`cargo xtask fuzz`, nightly only);
//! - by `cargo test` on stable, which feeds every file of the saved corpus
//!   `fuzz/corpus/<target>/` and every built-in seed ([`seeds`]) through the
//!   same function (`tests/corpus.rs`).
//!
//! Every target checks the same three properties: no panic (a panic is the
//! finding), no allocation above the caps the code claims (see [`alloc`] and
//! [`Target::max_single_alloc`]), and, where the code has an inverse
//! (encode/decode, serialize/parse), a round trip that gives back the same
//! value. `docs/fuzzing.md` describes the targets and their findings.

mod agent_client;
mod agent_server;
pub mod alloc;
mod cli;
mod config;
mod frame;
mod procfs;
pub mod seeds;

use std::time::Duration;

use vc_proto::codec::DECODE_LIMIT;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the libFuzzer binary and the corpus directory.
    pub name: &'static str,
    /// What it feeds the bytes to.
    pub what: &'static str,
    body: fn(&[u8]),
    /// Largest single allocation an input may cause, in bytes.
    pub max_single_alloc: usize,
    /// Largest growth of the live heap an input may cause, in bytes.
    pub max_peak: usize,
}

/// Most bytes of heap one protocol connection may hold: a frame payload and
/// its decoded value, each at most 4 MiB
/// ([`DEFAULT_MAX_PAYLOAD`](vc_proto::DEFAULT_MAX_PAYLOAD), [`DECODE_LIMIT`]).
const PER_CONNECTION: usize = vc_proto::DEFAULT_MAX_PAYLOAD as usize + DECODE_LIMIT;

/// Headroom for the runtime, tasks and buffers that are not the input's.
const OVERHEAD: usize = 8 << 20;

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "decode_frame",
        what: "vc-proto's frame reader and the payload codec of every message type",
        body: frame::decode_frame,
        max_single_alloc: DECODE_LIMIT,
        max_peak: PER_CONNECTION + OVERHEAD,
    },
    Target {
        name: "agent_client",
        what: "the host's agent client reading the agent's side of the control connection and two process streams",
        body: agent_client::run,
        max_single_alloc: DECODE_LIMIT,
        max_peak: 3 * PER_CONNECTION + OVERHEAD,
    },
    Target {
        name: "agent_server",
        what: "the agent's request loop (the real server, in-process) reading the host's side of a connection",
        body: agent_server::run,
        max_single_alloc: DECODE_LIMIT,
        max_peak: PER_CONNECTION + OVERHEAD,
    },
    Target {
        name: "config",
        what: "RuntimeConfig, PodConfig, ContainerConfig and VmConfig from TOML and JSON, their validation, and what the runtime derives from them",
        body: config::run,
        max_single_alloc: 1 << 20,
        max_peak: OVERHEAD,
    },
    Target {
        name: "cli_args",
        what: "the --volume, --tmpfs and --disk argument parsers and parse_size",
        body: cli::run,
        max_single_alloc: 1 << 20,
        max_peak: OVERHEAD,
    },
    Target {
        name: "procfs",
        what: "/proc/<pid>/stat and mountinfo (host), /proc/meminfo, /proc/cmdline, mountinfo and the cgroup v2 files (agent)",
        body: procfs::run,
        max_single_alloc: 1 << 20,
        max_peak: OVERHEAD,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

impl Target {
    /// Runs one input and checks the allocation caps. Panics on a finding.
    pub fn run(&self, data: &[u8]) {
        let usage = alloc::Usage::start();
        (self.body)(data);
        let usage = usage.finish();
        assert!(
            usage.largest <= self.max_single_alloc,
            "{}: one allocation of {} bytes, above the cap of {}",
            self.name,
            usage.largest,
            self.max_single_alloc
        );
        assert!(
            usage.peak <= self.max_peak,
            "{}: the heap grew by {} bytes, above the cap of {}",
            self.name,
            usage.peak,
            self.max_peak
        );
    }
}

/// Longest an async target may take for one input before it counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Runs `fut` to completion on a new current-thread runtime (so nothing of
/// one input outlives it); a future that does not finish within [`HANG`] is
/// a finding. With `paused`, time is virtual and jumps ahead whenever every
/// task waits: timeouts cost nothing, and [`HANG`] only fires on a real hang.
fn run_async<F: std::future::Future>(what: &str, paused: bool, fut: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(paused)
        .build()
        .expect("a current-thread tokio runtime builds");
    runtime.block_on(async {
        tokio::time::timeout(HANG, fut)
            .await
            .unwrap_or_else(|_| panic!("{what} hung for {HANG:?} on one input"))
    })
}

/// [`run_async`] in real time, for targets that do real I/O.
fn block_on<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    run_async(what, false, fut)
}

/// [`run_async`] in virtual time, for targets that only talk in memory.
fn block_on_paused<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    run_async(what, true, fut)
}
