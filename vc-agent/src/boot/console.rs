//! The console as stdin, stdout and stderr of PID 1.
//!
//! The kernel opens `/dev/console` on fds 0, 1 and 2 for init when the initrd has
//! that node (the image does); when it does not, the agent mounts devtmpfs and
//! opens it itself, so that the banner and the log always reach the console.

use std::io::Write;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;

/// True when `fd` is an open file descriptor.
fn is_open(fd: i32) -> bool {
    fcntl(fd, FcntlArg::F_GETFD).is_ok()
}

/// Makes sure fds 0, 1 and 2 are open, on `/dev/console` if they were not.
/// Best effort: a guest without a console still boots.
pub fn ensure_stdio() {
    if (0..=2).all(is_open) {
        return;
    }
    let _ = std::fs::create_dir_all("/dev");
    let _ = nix::mount::mount(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        nix::mount::MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    let Ok(console) = nix::fcntl::open(
        "/dev/console",
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        Mode::empty(),
    ) else {
        return;
    };
    for fd in 0..=2 {
        if !is_open(fd) && fd != console {
            let _ = nix::unistd::dup2(console, fd);
        }
    }
    if console > 2 {
        let _ = nix::unistd::close(console);
    }
}

/// Prints the banner the smoke tests look for, before anything else is done.
pub fn banner(pid1: bool) {
    let mode = if pid1 {
        "as PID 1"
    } else {
        "as a normal process"
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "vc-agent starting (version {}, {mode})",
        crate::VERSION
    );
    let _ = out.flush();
}
