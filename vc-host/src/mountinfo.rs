//! `/proc/<pid>/mountinfo`: the parser, and the questions the runtime asks of
//! it (is this path a mount point, what is mounted under a directory).
//!
//! The format is `proc(5)`'s: per line, mount id, parent id, `major:minor`,
//! root, mount point, mount options, zero or more optional fields ended by a
//! lone `-`, filesystem type, source, superblock options. Paths escape space,
//! tab, newline and backslash as `\ooo` (octal); [`unescape`] undoes that,
//! byte for byte, so a path that is not UTF-8 comes back as it is on disk.
//!
//! Mount points are the guest's business in part (a guest can make a host
//! directory with any name appear in the share), so the parser never panics
//! and refuses a malformed line with a typed error instead of guessing.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why mountinfo could not be read or parsed.
#[derive(Debug, Error)]
pub enum MountInfoError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A line does not have the fields `proc(5)` describes.
    #[error("mountinfo line {line} is malformed: {reason}")]
    Malformed {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// One mount, one line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The mount's id.
    pub id: u64,
    /// Its parent's id (itself for the root of the namespace).
    pub parent_id: u64,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// The directory of the filesystem that forms this mount's root.
    pub root: PathBuf,
    /// Where it is mounted, relative to the reader's root.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,nosuid,...`).
    pub mount_options: String,
    /// Optional fields: `shared:N`, `master:N`, `propagate_from:N`, `unbindable`.
    pub optional: Vec<String>,
    /// The filesystem type (`ext4`, `fuse.x`, ...).
    pub fs_type: String,
    /// The filesystem's source (escaped like a path, unescaped here).
    pub source: OsString,
    /// Per-superblock options.
    pub super_options: String,
}

impl Mount {
    /// True when the mount has per-mount option `opt` (`ro`, `nosuid`, ...).
    pub fn has_option(&self, opt: &str) -> bool {
        self.mount_options.split(',').any(|o| o == opt)
    }

    /// The peer group of a shared mount (`shared:N`).
    pub fn shared_group(&self) -> Option<u64> {
        self.optional_number("shared:")
    }

    /// The peer group a slave mount receives from (`master:N`).
    pub fn master_group(&self) -> Option<u64> {
        self.optional_number("master:")
    }

    fn optional_number(&self, prefix: &str) -> Option<u64> {
        self.optional
            .iter()
            .find_map(|f| f.strip_prefix(prefix)?.parse().ok())
    }
}

/// Undoes mountinfo's `\ooo` escapes. A backslash not followed by three octal
/// digits (or one whose value does not fit a byte) is kept as it is.
pub fn unescape(s: &str) -> OsString {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(v) = bytes.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    OsString::from_vec(out)
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    digits
        .iter()
        .try_fold(0u16, |acc, &d| {
            (b'0'..=b'7')
                .contains(&d)
                .then(|| acc * 8 + u16::from(d - b'0'))
        })
        .and_then(|v| u8::try_from(v).ok())
}

/// Parses the whole of a mountinfo file. Empty lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Mount>, MountInfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| {
            parse_line(l).map_err(|reason| MountInfoError::Malformed {
                line: n + 1,
                reason,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Mount, &'static str> {
    let mut fields = line.split(' ');
    let mut next = |what: &'static str| fields.next().filter(|f| !f.is_empty()).ok_or(what);
    let id = next("no mount id")?
        .parse()
        .map_err(|_| "the mount id is not a number")?;
    let parent_id = next("no parent id")?
        .parse()
        .map_err(|_| "the parent id is not a number")?;
    let (major, minor) = next("no device number")?
        .split_once(':')
        .ok_or("the device number has no `:`")?;
    let major = major
        .parse()
        .map_err(|_| "the major number is not a number")?;
    let minor = minor
        .parse()
        .map_err(|_| "the minor number is not a number")?;
    let root = PathBuf::from(unescape(next("no root")?));
    let mount_point = PathBuf::from(unescape(next("no mount point")?));
    let mount_options = next("no mount options")?.to_owned();
    let mut optional = Vec::new();
    loop {
        match next("no `-` separator")? {
            "-" => break,
            field => optional.push(field.to_owned()),
        }
    }
    let fs_type = next("no filesystem type")?.to_owned();
    // The source may be empty on some filesystems, shown as `none` by most
    // kernels, but accept an empty field.
    let source = unescape(fields.next().ok_or("no source")?);
    let super_options = fields.next().ok_or("no superblock options")?.to_owned();
    if fields.next().is_some() {
        return Err("fields after the superblock options");
    }
    Ok(Mount {
        id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional,
        fs_type,
        source,
        super_options,
    })
}

/// The mounts of this process's mount namespace.
pub fn read() -> Result<Vec<Mount>, MountInfoError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| MountInfoError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

/// The mounts at `dir` or below it, by path components (so `/a/bc` is not
/// under `/a/b`), in mountinfo order (parents before the mounts made on them).
pub fn under<'a>(mounts: &'a [Mount], dir: &'a Path) -> impl Iterator<Item = &'a Mount> + 'a {
    mounts
        .iter()
        .filter(move |m| m.mount_point.starts_with(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
36 22 0:32 / /run rw,nosuid,nodev - tmpfs tmpfs rw,size=10%
40 36 0:33 /sub\\040dir /run/a\\040b ro,nosuid master:7 shared:9 - fuse.x my\\134src rw
41 36 0:34 / /run/empty rw - tmpfs  rw
";

    #[test]
    fn parses_every_field() {
        let m = parse(SAMPLE).expect("parses");
        assert_eq!(m.len(), 4);
        assert_eq!((m[0].id, m[0].parent_id), (22, 1));
        assert_eq!((m[0].major, m[0].minor), (0, 21));
        assert_eq!(m[0].shared_group(), Some(1));
        assert_eq!(m[1].mount_point, Path::new("/run"));
        assert!(m[1].has_option("nosuid") && !m[1].has_option("ro"));
        assert_eq!(m[2].root, Path::new("/sub dir"));
        assert_eq!(m[2].mount_point, Path::new("/run/a b"));
        assert_eq!(m[2].optional, vec!["master:7", "shared:9"]);
        assert_eq!(
            (m[2].master_group(), m[2].shared_group()),
            (Some(7), Some(9))
        );
        assert_eq!(m[2].fs_type, "fuse.x");
        assert_eq!(m[2].source, OsString::from("my\\src"));
        assert_eq!(m[3].source, OsString::new());
        assert_eq!(m[3].super_options, "rw");
    }

    #[test]
    fn unescape_is_byte_exact() {
        assert_eq!(unescape(r"/a\040b"), OsString::from("/a b"));
        assert_eq!(unescape(r"/t\011n\012b\134"), OsString::from("/t\tn\nb\\"));
        assert_eq!(unescape("/plain"), OsString::from("/plain"));
        assert_eq!(unescape(r"/x\377"), OsString::from_vec(b"/x\xff".to_vec()));
        // Not an escape: kept.
        assert_eq!(unescape(r"/a\04"), OsString::from(r"/a\04"));
        assert_eq!(unescape(r"/a\400"), OsString::from(r"/a\400"));
        assert_eq!(unescape(r"/a\9xx\"), OsString::from(r"/a\9xx\"));
    }

    #[test]
    fn malformed_lines_are_typed_errors_with_their_number() {
        for bad in [
            "x 1 0:1 / / rw - ext4 s o",
            "1 1 01 / / rw - ext4 s o",
            "1 1 0:1 / / rw ext4 s o",
            "1 1 0:1 / / rw - ext4 s",
            "1 1 0:1 / / rw - ext4 s o extra",
            "1",
        ] {
            let text = format!("22 1 0:21 / / rw - ext4 /dev/vda1 rw\n{bad}\n");
            match parse(&text) {
                Err(MountInfoError::Malformed { line: 2, .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn under_compares_components() {
        let text =
            "1 1 0:1 / /a/b rw - t s o\n2 1 0:1 / /a/bc rw - t s o\n3 1 0:1 / /a/b/c rw - t s o\n";
        let m = parse(text).expect("parses");
        let ids: Vec<u64> = under(&m, Path::new("/a/b")).map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[test]
    fn this_process_mountinfo_parses() {
        let m = read().expect("reads");
        assert!(m.iter().any(|m| m.mount_point == Path::new("/")));
    }
}
