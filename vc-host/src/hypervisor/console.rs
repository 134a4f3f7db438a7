//! The guest's serial console on the host, bounded.
//!
//! QEMU 7.2 can only append a console to a file without limit, and the guest
//! writes as much as it likes. So QEMU sends the console to a Unix socket
//! (`-chardev socket,fd=N`: a connection the launcher made, as root, and
//! handed over, since QEMU runs unprivileged) where a small logger process,
//! `vc-console-log` (a binary of this crate, started and recorded like the
//! helper daemons, in the pod's cgroup), writes it to `console.log` and
//! rotates: when the file would pass half of the limit it becomes
//! `console.log.1` (replacing the previous one) and a new `console.log`
//! starts. The host keeps at most the limit, the most recent output.
//!
//! When the logger is slow, QEMU's serial device holds the guest back (the
//! UART stays busy until the socket takes the byte): nothing is dropped and
//! nothing grows. If the logger dies, QEMU drops console output and the VM
//! runs on.
//!
//! Readers: [`tail_bytes`] reads the end of both files as one text; [`ConsoleWatch`]
//! follows the console across rotations to find a line (the agent's ready
//! line) reading each byte once.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Bytes read from the socket at once.
const CHUNK: usize = 64 * 1024;

/// The rotated file of `current`: `<current>.1`.
pub fn rotated_path(current: &Path) -> PathBuf {
    let mut p = current.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Both console files, oldest first.
pub fn console_files(current: &Path) -> [PathBuf; 2] {
    [rotated_path(current), current.to_path_buf()]
}

/// A log file that rotates once it would pass `max_file_bytes`. The file
/// and its rotated sibling are named relative to a descriptor of their
/// directory, opened once: when the directory is moved (a pooled VM's run
/// directory becomes its pod's at adoption) the log follows it.
#[derive(Debug)]
pub struct RotatingLog {
    dir: File,
    name: std::ffi::OsString,
    rotated: std::ffi::OsString,
    max_file_bytes: u64,
    file: File,
    size: u64,
}

fn create_log(dir: &File, name: &std::ffi::OsStr) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    let fd = nix::fcntl::openat(
        Some(std::os::fd::AsRawFd::as_raw_fd(dir)),
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

impl RotatingLog {
    /// Starts an empty log at `path` (removing an earlier rotated file) that
    /// keeps at most `max_bytes` in two files.
    pub fn create(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let invalid = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path");
        let parent = path.parent().ok_or_else(invalid)?;
        let name = path.file_name().ok_or_else(invalid)?.to_owned();
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            })?;
        let mut rotated = name.clone();
        rotated.push(".1");
        match nix::unistd::unlinkat(
            Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
            rotated.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Err(nix::errno::Errno::ENOENT) | Ok(()) => {}
            Err(e) => return Err(e.into()),
        }
        let file = create_log(&dir, &name)?;
        Ok(RotatingLog {
            dir,
            name,
            rotated,
            max_file_bytes: (max_bytes / 2).max(1),
            file,
            size: 0,
        })
    }

    /// Appends `buf`, rotating first whenever the current file is full.
    pub fn write(&mut self, mut buf: &[u8]) -> std::io::Result<()> {
        while !buf.is_empty() {
            if self.size >= self.max_file_bytes {
                self.rotate()?;
            }
            let room = usize::try_from(self.max_file_bytes - self.size).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            self.file.write_all(&buf[..n])?;
            self.size += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.dir);
        nix::fcntl::renameat(
            Some(fd),
            self.name.as_os_str(),
            Some(fd),
            self.rotated.as_os_str(),
        )?;
        self.file = create_log(&self.dir, &self.name)?;
        self.size = 0;
        Ok(())
    }
}

/// The logger's main loop: takes one connection (QEMU's) from `listener`
/// and copies it into `log` until QEMU closes it.
pub fn serve(
    listener: &std::os::unix::net::UnixListener,
    log: &mut RotatingLog,
) -> std::io::Result<()> {
    let (mut conn, _) = listener.accept()?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        log.write(&buf[..n])?;
    }
}

/// The last `max` bytes of the files, read as one stream (oldest first);
/// files that cannot be read count as empty.
pub fn tail_bytes(paths: &[PathBuf], max: u64) -> Vec<u8> {
    let mut parts = Vec::new();
    let mut want = max;
    for path in paths.iter().rev() {
        if want == 0 {
            break;
        }
        let Ok(mut f) = File::open(path) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let take = len.min(want);
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(len - take)).is_ok()
            && f.take(take).read_to_end(&mut bytes).is_ok()
        {
            want -= bytes.len() as u64;
            parts.push(bytes);
        }
    }
    parts.into_iter().rev().flatten().collect()
}

/// Follows a rotating console to find a byte string, reading every byte
/// once: new bytes of the current file at each [`poll`](Self::poll), and
/// after a rotation the rest of the old file (now `<path>.1`) first.
#[derive(Debug)]
pub struct ConsoleWatch {
    path: PathBuf,
    /// Inode of the file being followed and the offset read up to.
    at: Option<(u64, u64)>,
    /// The last bytes seen, so a match split across reads is found.
    carry: Vec<u8>,
    /// Most bytes read per poll.
    budget: u64,
    /// Bytes read so far, across rotations: the guest's progress.
    consumed: u64,
}

impl ConsoleWatch {
    /// Follows the console at `path` (the current file); each poll reads at
    /// most `budget` bytes.
    pub fn new(path: &Path, budget: u64) -> Self {
        ConsoleWatch {
            path: path.to_path_buf(),
            at: None,
            carry: Vec::new(),
            budget,
            consumed: 0,
        }
    }

    /// How many console bytes the polls have read so far (it only grows):
    /// a boot deadline extends while it does.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Reads what is new and reports whether `needle` has appeared (since
    /// this watch began). A missing file is not an error: the console may
    /// not have started yet.
    pub fn poll(&mut self, needle: &[u8]) -> bool {
        let Ok(mut current) = File::open(&self.path) else {
            return false;
        };
        let Ok(ino) = current.metadata().map(|m| m.ino()) else {
            return false;
        };
        let mut budget = self.budget;
        let mut found = false;
        let start = match self.at {
            Some((old, off)) if old == ino => off,
            Some((old, off)) => {
                // Rotated since the last poll: finish the old file first.
                if let Ok(mut prev) = File::open(rotated_path(&self.path)) {
                    if prev.metadata().is_ok_and(|m| m.ino() == old) {
                        found |= self.scan(&mut prev, off, &mut budget, needle).1;
                    }
                }
                0
            }
            None => 0,
        };
        let (end, in_current) = self.scan(&mut current, start, &mut budget, needle);
        self.at = Some((ino, end));
        found || in_current
    }

    /// Reads `f` from `from`, within the budget, looking for `needle`;
    /// returns the offset reached and whether it was seen.
    fn scan(&mut self, f: &mut File, from: u64, budget: &mut u64, needle: &[u8]) -> (u64, bool) {
        let mut bytes = Vec::new();
        if f.seek(SeekFrom::Start(from)).is_err() {
            return (from, false);
        }
        let _ = Read::by_ref(f).take(*budget).read_to_end(&mut bytes);
        *budget -= bytes.len() as u64;
        self.consumed += bytes.len() as u64;
        let end = from + bytes.len() as u64;
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(&bytes);
        let found = !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle);
        let keep = needle.len().saturating_sub(1).min(hay.len());
        self.carry = hay.split_off(hay.len() - keep);
        (end, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    #[test]
    fn the_log_rotates_where_its_directory_moved() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (old, new) = (tmp.path().join("slot"), tmp.path().join("pod"));
        std::fs::create_dir(&old).expect("dir");
        let mut log = RotatingLog::create(&old.join("console.log"), 100).expect("log");
        log.write(b"before the move ").expect("write");
        std::fs::rename(&old, &new).expect("move");
        log.write(&[b'x'; 120]).expect("write across a rotation");
        let current = new.join("console.log");
        assert!(rotated_path(&current).exists(), "rotated in the new place");
        assert!(!old.exists(), "nothing made at the old path");
        let text = tail_bytes(&console_files(&current), 1000);
        assert!(text.ends_with(&[b'x'; 50]), "{text:?}");
    }

    #[test]
    fn the_log_keeps_the_latest_bytes_within_its_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        std::fs::write(rotated_path(&path), "stale").expect("stale");
        let mut log = RotatingLog::create(&path, 1000).expect("log");
        assert!(
            !rotated_path(&path).exists(),
            "an earlier run's file is gone"
        );
        let input: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in input.chunks(333) {
            log.write(chunk).expect("write");
            let (old, cur) = (read(&rotated_path(&path)), read(&path));
            assert!(
                old.len() <= 500 && cur.len() <= 500,
                "{} {}",
                old.len(),
                cur.len()
            );
        }
        let kept = [read(&rotated_path(&path)), read(&path)].concat();
        assert!(kept.len() > 500, "at least half the limit is kept");
        assert!(input.ends_with(&kept), "the newest bytes, in order");
        assert_eq!(tail_bytes(&console_files(&path), 10_000), kept);
        assert_eq!(
            tail_bytes(&console_files(&path), 700),
            kept[kept.len() - 700..]
        );
        // One write larger than a file rotates in the middle of it.
        log.write(&[b'x'; 1200]).expect("big write");
        assert_eq!(read(&path).len(), 200);
        assert_eq!(read(&rotated_path(&path)), vec![b'x'; 500]);
    }

    #[test]
    fn the_watch_finds_a_line_across_reads_and_rotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let needle = b"READY-LINE";
        let mut watch = ConsoleWatch::new(&path, 1 << 20);
        assert!(!watch.poll(needle), "no file yet");
        let mut log = RotatingLog::create(&path, 200).expect("log");
        log.write(&[b'.'; 95]).expect("write");
        assert!(!watch.poll(needle));
        // The line fills the file, which rotates in the middle of it; more
        // follows. The watch reads the rest of the rotated file, then the
        // new one.
        log.write(b"READY-LINE and more").expect("write");
        assert_eq!(read(&rotated_path(&path)).len(), 100);
        assert_eq!(read(&path), b"-LINE and more");
        assert!(watch.poll(needle), "split across a rotation");
        assert_eq!(watch.consumed(), 95 + 19, "every byte counted once");
        // A fresh watch over a flood without the line reads it bounded
        // per poll and never finds it.
        let mut flood = ConsoleWatch::new(&path, 64);
        for _ in 0..10 {
            log.write(&[b'#'; 90]).expect("flood");
            assert!(!flood.poll(needle));
        }
    }
}
