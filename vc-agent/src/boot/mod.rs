//! PID 1 early setup, run single-threaded before the async runtime starts:
//! the console, the mount table ([`mounts`]), the kernel modules ([`modules`]).
//! Nothing here runs when the agent is a normal process (tests).

pub mod console;
pub mod modules;
pub mod mounts;

pub use modules::{load_modules, ModuleError, MODULE_DIR, MODULE_LIST, VSOCK_TRANSPORT};

/// Descriptors PID 1 (and what it starts) may open: the kernel's default soft
/// limit of 1024 is too low for many processes with attached streams.
pub const NOFILE_LIMIT: u64 = 1 << 20;

/// Raises `RLIMIT_NOFILE` to [`NOFILE_LIMIT`] (or as far as the kernel allows).
pub fn raise_nofile_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if setrlimit(Resource::RLIMIT_NOFILE, NOFILE_LIMIT, NOFILE_LIMIT).is_ok() {
        return;
    }
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
pub use mounts::{mount_all, MountError, MOUNT_TABLE};
