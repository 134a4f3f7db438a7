//! What the spawner runs in the child, and how a failure there gets back to the
//! parent.
//!
//! A [`Launch`] is prepared before the fork (every path, argument and
//! environment string already a `CString`), so that the child only makes system
//! calls. When the child cannot reach `execve`, or `execve` fails, it writes one
//! [`ChildFailure`] record (at most [`RECORD_LEN`] bytes, so the write is atomic)
//! into the close-on-exec error pipe and exits with status 127. The parent reads
//! the pipe to its end: nothing means the exec succeeded.

use std::fmt::{self, Write as _};

use nix::errno::Errno;
use nix::sched::CloneFlags;

/// Work done in a freshly forked child, after its stdio is in place.
pub trait Launch: Send {
    /// Namespaces the child is created in (`clone` flags); empty for a plain fork.
    fn clone_flags(&self) -> CloneFlags;

    /// Runs in the child: enters the container (or not), then executes the
    /// program. Returns only on failure. It must not allocate nor take locks: the
    /// child is a copy of a multi-threaded process.
    fn enter(&self) -> ChildFailure;

    /// The `ptmx` a terminal for the child is opened from, so that the pty
    /// belongs to the devpts instance the child sees; `None`: the VM's own.
    fn ptmx(&self) -> Option<&std::ffi::CStr> {
        None
    }
}

/// Which part of the child's work failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// `execve` itself: the program is missing or not executable.
    Exec,
    /// Anything before it (namespaces, mounts, user, cwd, stdio...).
    Setup,
}

/// Longest failure message kept; longer ones are cut.
pub const MESSAGE_MAX: usize = 240;

/// Size of one encoded record: errno (4), kind (1), length (1), message.
pub const RECORD_LEN: usize = 6 + MESSAGE_MAX;

/// A failure in the child, in a fixed-size buffer (no allocation).
#[derive(Clone, Copy)]
pub struct ChildFailure {
    kind: FailureKind,
    errno: Errno,
    len: u8,
    message: [u8; MESSAGE_MAX],
}

impl fmt::Debug for ChildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildFailure")
            .field("kind", &self.kind)
            .field("errno", &self.errno)
            .field("message", &self.message())
            .finish()
    }
}

/// A `fmt::Write` into the record's buffer that cuts at the end (on a char
/// boundary) instead of failing.
struct Cut<'a> {
    buf: &'a mut [u8; MESSAGE_MAX],
    len: usize,
}

impl fmt::Write for Cut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let bytes = c.encode_utf8(&mut utf8).as_bytes();
            if self.len + bytes.len() > MESSAGE_MAX {
                return Ok(());
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}

impl ChildFailure {
    /// A failure with a message formatted into the fixed buffer. Formatting does
    /// not allocate unless a `Display` implementation in `message` does.
    pub fn new(kind: FailureKind, errno: Errno, message: fmt::Arguments<'_>) -> Self {
        let mut buf = [0u8; MESSAGE_MAX];
        let mut cut = Cut {
            buf: &mut buf,
            len: 0,
        };
        let _ = cut.write_fmt(message);
        let len = cut.len as u8;
        Self {
            kind,
            errno,
            len,
            message: buf,
        }
    }

    /// A failure described by a static text.
    pub fn with_static(kind: FailureKind, errno: Errno, message: &'static str) -> Self {
        Self::new(kind, errno, format_args!("{message}"))
    }

    /// Which part failed.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The errno of the failed call.
    pub fn errno(&self) -> Errno {
        self.errno
    }

    /// What was being done.
    pub fn message(&self) -> &str {
        let bytes = &self.message[..usize::from(self.len)];
        // Only whole chars are ever written (see `Cut`).
        std::str::from_utf8(bytes).unwrap_or("(undecodable message)")
    }

    /// Encodes the record the child writes to the error pipe.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0..4].copy_from_slice(&(self.errno as i32).to_le_bytes());
        out[4] = match self.kind {
            FailureKind::Exec => 0,
            FailureKind::Setup => 1,
        };
        out[5] = self.len;
        out[6..].copy_from_slice(&self.message);
        out
    }

    /// Decodes what the parent read from the error pipe; `None` when it is not
    /// a whole record.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != RECORD_LEN {
            return None;
        }
        let errno = Errno::from_raw(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        let kind = match bytes[4] {
            0 => FailureKind::Exec,
            1 => FailureKind::Setup,
            _ => return None,
        };
        let len = bytes[5];
        if usize::from(len) > MESSAGE_MAX {
            return None;
        }
        let mut message = [0u8; MESSAGE_MAX];
        message.copy_from_slice(&bytes[6..]);
        let failure = Self {
            kind,
            errno,
            len,
            message,
        };
        std::str::from_utf8(&message[..usize::from(len)]).ok()?;
        Some(failure)
    }
}

/// The seam with [`crate::container`]: its launch plans run in the spawner's
/// child. A failure is reported as the step that failed (and which item of it).
impl Launch for crate::container::LaunchPlan {
    fn clone_flags(&self) -> CloneFlags {
        crate::container::LaunchPlan::clone_flags(self)
    }

    fn ptmx(&self) -> Option<&std::ffi::CStr> {
        self.ptmx.as_deref()
    }

    fn enter(&self) -> ChildFailure {
        let error = match self.enter_in_child() {
            Ok(never) => match never {},
            Err(error) => error,
        };
        let kind = if error.is_exec() {
            FailureKind::Exec
        } else {
            FailureKind::Setup
        };
        if error.index() == 0 {
            ChildFailure::new(kind, error.errno(), format_args!("{}", error.step()))
        } else {
            ChildFailure::new(
                kind,
                error.errno(),
                format_args!("{} (item {})", error.step(), error.index()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = ChildFailure::new(
            FailureKind::Exec,
            Errno::ENOENT,
            format_args!("execve {}", "/bin/nope"),
        );
        let back = ChildFailure::decode(&f.encode()).expect("decodes");
        assert_eq!(back.kind(), FailureKind::Exec);
        assert_eq!(back.errno(), Errno::ENOENT);
        assert_eq!(back.message(), "execve /bin/nope");
    }

    #[test]
    fn long_messages_are_cut_on_char_boundaries() {
        let long = "é".repeat(200);
        let f = ChildFailure::new(FailureKind::Setup, Errno::EPERM, format_args!("{long}"));
        assert_eq!(f.message().len(), MESSAGE_MAX);
        assert!(ChildFailure::decode(&f.encode()).is_some());
    }

    #[test]
    fn short_reads_are_rejected() {
        assert!(ChildFailure::decode(&[0u8; 5]).is_none());
    }
}
