//! The middle process of an exec.
//!
//! `setns` into a PID namespace only places the caller's *children* in it, so
//! the child the agent forked forks once more after joining the namespaces. The
//! agent knows the middle process's pid; this module makes the middle stand for
//! the real process:
//! - signals sent to it with `kill` (`si_code <= 0`) are forwarded to the real
//!   process; signals the kernel generates (a terminal's `^C`, which reaches the
//!   real process directly through its process group, or a fault) are not;
//! - it closes every descriptor, so stdio and the agent's error pipe stay open
//!   only in the real process;
//! - when the real process ends it ends the same way: the same exit status, or
//!   the same signal re-raised (`128 + signal` as exit status when that signal's
//!   default action does not end a process);
//! - the real process gets `PR_SET_PDEATHSIG(SIGKILL)`, so a SIGKILL to the middle
//!   (which cannot be forwarded) still ends it.

use std::sync::atomic::{AtomicI32, Ordering};

use super::sys::{self, SigSet};
use crate::container::error::{ChildSetupError, SetupStep};

/// The real process, for the signal handler.
static REAL_PID: AtomicI32 = AtomicI32::new(0);

/// Whether `sig` is relayed: everything that can be caught except SIGCHLD and
/// the synchronous fault signals (a fault of the middle itself must not loop in
/// the handler).
fn relayed(sig: libc::c_int) -> bool {
    !matches!(
        sig,
        libc::SIGKILL
            | libc::SIGSTOP
            | libc::SIGCHLD
            | libc::SIGSEGV
            | libc::SIGBUS
            | libc::SIGILL
            | libc::SIGFPE
            | libc::SIGTRAP
            | libc::SIGSYS
    ) && (sig < 32 || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig))
}

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: for an SA_SIGINFO handler the kernel passes a valid siginfo_t.
    let code = unsafe { (*info).si_code };
    if code > 0 {
        return;
    }
    let pid = REAL_PID.load(Ordering::Relaxed);
    if pid > 0 {
        sys::kill(pid, sig);
    }
}

/// Forks; returns `Ok` in the new (grandchild) process and never in the
/// middle one, which relays until the grandchild ends and then exits.
pub(super) fn fork_and_relay() -> Result<(), ChildSetupError> {
    // Block what is relayed until the handlers are in place, so nothing sent
    // right after the fork is lost (it stays pending).
    let mut set = SigSet::empty();
    for sig in 1..=64 {
        if relayed(sig) {
            set.add(sig);
        }
    }
    let old = set
        .apply(libc::SIG_BLOCK)
        .map_err(|e| ChildSetupError::new(SetupStep::Signals, e))?;
    let pid = match sys::raw_fork() {
        Ok(pid) => pid,
        Err(e) => {
            let _ = old.apply(libc::SIG_SETMASK);
            return Err(ChildSetupError::new(SetupStep::Fork, e));
        }
    };
    if pid == 0 {
        old.apply(libc::SIG_SETMASK)
            .map_err(|e| ChildSetupError::new(SetupStep::Signals, e))?;
        return Ok(());
    }
    relay(pid, old)
}

fn relay(pid: libc::pid_t, old_mask: SigSet) -> ! {
    REAL_PID.store(pid, Ordering::Relaxed);
    for sig in 1..=64 {
        if relayed(sig) {
            sys::set_action(
                sig,
                forward as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                    as libc::sighandler_t,
                libc::SA_SIGINFO | libc::SA_RESTART,
            );
        }
    }
    sys::close_from(0);
    let _ = old_mask.apply(libc::SIG_SETMASK);

    let status = match sys::wait(pid) {
        Ok(status) => status,
        Err(_) => sys::exit(255),
    };
    if libc::WIFEXITED(status) {
        sys::exit(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        sys::set_action(sig, libc::SIG_DFL, 0);
        let mut only = SigSet::empty();
        only.add(sig);
        let _ = only.apply(libc::SIG_UNBLOCK);
        sys::kill(sys::getpid(), sig);
        sys::exit(128 + sig);
    }
    sys::exit(255)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_signals() {
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGWINCH,
        ] {
            assert!(relayed(sig), "{sig}");
        }
        for sig in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGCHLD,
            libc::SIGSEGV,
            32,
            33,
        ] {
            assert!(!relayed(sig), "{sig}");
        }
        assert!(relayed(libc::SIGRTMIN()));
        assert!(relayed(libc::SIGRTMAX()));
    }
}
