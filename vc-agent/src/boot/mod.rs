//! PID 1 early setup, run single-threaded before the async runtime starts:
//! the console, the mount table ([`mounts`]), the kernel modules ([`modules`]).
//! Nothing here runs when the agent is a normal process (tests).

pub mod console;
pub mod modules;
pub mod mounts;

pub use modules::{load_modules, ModuleError, MODULE_DIR, MODULE_LIST};
pub use mounts::{mount_all, MountError, MOUNT_TABLE};
