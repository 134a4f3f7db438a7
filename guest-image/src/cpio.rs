//! A writer of cpio archives in the "newc" format (the one the Linux kernel unpacks as initramfs).
//!
//! Each entry is a 110-byte ASCII header (`070701` and 13 eight-digit hex fields), the path with a
//! NUL, padding to a multiple of 4, the data, padding to a multiple of 4. The archive ends with an
//! entry named `TRAILER!!!`. Entries are written with uid/gid 0 and mtime 0 so that the same
//! contents give the same bytes.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Errors of writing a cpio archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// Writing to the underlying writer failed.
    #[error("cannot write the cpio archive")]
    Io(#[from] io::Error),
    /// The path is empty, absolute after normalization, has a NUL or a `..` component.
    #[error("invalid path in cpio archive: {0:?}")]
    InvalidPath(String),
    /// The file is larger than the format's 4 GiB limit.
    #[error("file {path} is too large for a newc cpio archive ({size} bytes)")]
    TooLarge {
        /// The path in the archive.
        path: String,
        /// Its size.
        size: u64,
    },
}

/// Writes a newc cpio archive entry by entry.
#[derive(Debug)]
pub struct CpioWriter<W> {
    inner: W,
    next_ino: u32,
    offset: u64,
}

struct Header<'a> {
    path: &'a str,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev: (u32, u32),
}

impl<W: Write> CpioWriter<W> {
    /// Starts an archive on `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            next_ino: 1,
            offset: 0,
        }
    }

    /// Adds a directory. `mode` holds permission bits only (for example `0o755`).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFDIR | (mode & 0o7777),
                nlink: 2,
                filesize: 0,
                rdev: (0, 0),
            },
            &[],
        )
    }

    /// Adds a regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), CpioError> {
        let path = normalize(path)?;
        let filesize = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: path.clone(),
            size: data.len() as u64,
        })?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFREG | (mode & 0o7777),
                nlink: 1,
                filesize,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// Adds a symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        let path = normalize(path)?;
        let data = target.as_bytes();
        let filesize = u32::try_from(data.len()).map_err(|_| CpioError::TooLarge {
            path: path.clone(),
            size: data.len() as u64,
        })?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                filesize,
                rdev: (0, 0),
            },
            data,
        )
    }

    /// Adds a character device node `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        let path = normalize(path)?;
        self.entry(
            Header {
                path: &path,
                mode: S_IFCHR | (mode & 0o7777),
                nlink: 1,
                filesize: 0,
                rdev: (major, minor),
            },
            &[],
        )
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> Result<W, CpioError> {
        self.next_ino = 0;
        self.entry(
            Header {
                path: TRAILER,
                mode: 0,
                nlink: 1,
                filesize: 0,
                rdev: (0, 0),
            },
            &[],
        )?;
        self.inner.flush()?;
        Ok(self.inner)
    }

    fn entry(&mut self, h: Header<'_>, data: &[u8]) -> Result<(), CpioError> {
        let ino = self.next_ino;
        if self.next_ino != 0 {
            self.next_ino += 1;
        }
        let namesize = h.path.len() + 1;
        let header = format!(
            "{MAGIC}{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{filesize:08X}\
             {devmajor:08X}{devminor:08X}{rdevmajor:08X}{rdevminor:08X}{namesize:08X}{check:08X}",
            mode = h.mode,
            uid = 0,
            gid = 0,
            nlink = h.nlink,
            mtime = 0,
            filesize = h.filesize,
            devmajor = 0,
            devminor = 0,
            rdevmajor = h.rdev.0,
            rdevminor = h.rdev.1,
            check = 0,
        );
        debug_assert_eq!(header.len(), HEADER_LEN);
        self.write(header.as_bytes())?;
        self.write(h.path.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), CpioError> {
        self.inner.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), CpioError> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.write(&[0; 3][..4 - rem])?;
        }
        Ok(())
    }
}

/// Archive paths are relative: `/init` and `init` both become `init`.
fn normalize(path: &str) -> Result<String, CpioError> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    let bad = trimmed.is_empty()
        || trimmed.contains('\0')
        || trimmed == TRAILER
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CpioError::InvalidPath(path.to_owned()));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
pub(crate) mod reader {
    //! A minimal newc reader, to check what the writer wrote.

    /// One entry read back.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct Entry {
        pub ino: u32,
        pub path: String,
        pub mode: u32,
        pub nlink: u32,
        pub rdev: (u32, u32),
        pub data: Vec<u8>,
    }

    fn field(h: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&h[6 + 8 * i..6 + 8 * (i + 1)]).expect("ascii");
        u32::from_str_radix(s, 16).expect("hex")
    }

    fn align(n: usize) -> usize {
        n.div_ceil(4) * 4
    }

    /// Reads all entries up to and excluding the trailer; panics on malformed input.
    pub(crate) fn read(archive: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let h = &archive[pos..pos + 110];
            assert_eq!(&h[..6], b"070701");
            let namesize = field(h, 11) as usize;
            let filesize = field(h, 6) as usize;
            let name_start = pos + 110;
            let name = &archive[name_start..name_start + namesize];
            assert_eq!(name.last(), Some(&0), "name is NUL-terminated");
            let path = String::from_utf8(name[..namesize - 1].to_vec()).expect("utf8");
            let data_start = align(name_start + namesize);
            let data = archive[data_start..data_start + filesize].to_vec();
            pos = align(data_start + filesize);
            if path == "TRAILER!!!" {
                assert_eq!(pos, archive.len(), "nothing after the trailer");
                return out;
            }
            out.push(Entry {
                ino: field(h, 0),
                path,
                mode: field(h, 1),
                nlink: field(h, 4),
                rdev: (field(h, 9), field(h, 10)),
                data,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(f: impl FnOnce(&mut CpioWriter<Vec<u8>>)) -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        f(&mut w);
        w.finish().expect("finish")
    }

    #[test]
    fn empty_archive_is_only_the_trailer() {
        let a = archive(|_| {});
        assert_eq!(
            a.len(),
            124,
            "110-byte header + \"TRAILER!!!\\0\" padded to 4"
        );
        assert!(a.starts_with(b"070701"));
        assert_eq!(&a[110..120], b"TRAILER!!!");
        assert_eq!(a.len() % 4, 0);
        assert!(reader::read(&a).is_empty());
    }

    #[test]
    fn header_fields_are_exact() {
        let a = archive(|w| w.file("/init", 0o755, b"abc").expect("file"));
        let expected = "070701\
            00000001\
            000081ED\
            00000000\
            00000000\
            00000001\
            00000000\
            00000003\
            00000000\
            00000000\
            00000000\
            00000000\
            00000005\
            00000000";
        assert_eq!(&a[..110], expected.as_bytes());
        // name "init\0" ends at 115, padded to 116; data at 116..119, padded to 120.
        assert_eq!(&a[110..116], b"init\0\0");
        assert_eq!(&a[116..120], b"abc\0");
    }

    #[test]
    fn round_trip_of_every_kind() {
        let a = archive(|w| {
            w.dir("dev", 0o755).expect("dir");
            w.char_device("/dev/console", 0o600, 5, 1).expect("chr");
            w.dir("tmp/", 0o1777).expect("dir");
            w.symlink("bin/sh", "busybox").expect("link");
            for len in 0..9 {
                w.file(&format!("f{len}"), 0o644, &vec![b'x'; len])
                    .expect("file");
            }
        });
        let entries = reader::read(&a);
        assert_eq!(entries.len(), 13);
        assert_eq!(entries[0].path, "dev");
        assert_eq!(entries[0].mode, 0o040_755);
        assert_eq!(entries[0].nlink, 2);
        assert_eq!(entries[1].path, "dev/console");
        assert_eq!(entries[1].mode, 0o020_600);
        assert_eq!(entries[1].rdev, (5, 1));
        assert_eq!(entries[2].path, "tmp");
        assert_eq!(entries[2].mode, 0o041_777);
        assert_eq!(entries[3].mode, 0o120_777);
        assert_eq!(entries[3].data, b"busybox");
        for len in 0..9 {
            let e = &entries[4 + len];
            assert_eq!(e.path, format!("f{len}"));
            assert_eq!(e.data.len(), len);
            assert_eq!(e.mode, 0o100_644);
        }
        let inos: std::collections::BTreeSet<_> = entries.iter().map(|e| e.ino).collect();
        assert_eq!(inos.len(), entries.len(), "inode numbers are unique");
    }

    #[test]
    fn same_input_same_bytes() {
        let make = || archive(|w| w.file("a", 0o644, b"hello").expect("file"));
        assert_eq!(make(), make());
    }

    #[test]
    fn invalid_paths_are_rejected() {
        let mut w = CpioWriter::new(Vec::new());
        for p in ["", "/", "a/../b", "./a", "a//b", "a\0b", "TRAILER!!!"] {
            assert!(
                matches!(w.dir(p, 0o755), Err(CpioError::InvalidPath(_))),
                "{p:?} must be rejected"
            );
        }
    }
}
