//! Deterministic tar archives: entries in the order they are added (callers add them sorted),
//! owner 0:0, a fixed modification time and no user or group names, so the same tree always gives
//! the same bytes; and gzip with a fixed header (no name, mtime 0).

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use flate2::{Compression, GzBuilder};

/// The modification time of every entry (the Unix epoch).
const MTIME: u64 = 0;

/// A tar archive being written into memory.
pub(crate) struct TarWriter {
    builder: tar::Builder<Vec<u8>>,
}

impl std::fmt::Debug for TarWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarWriter").finish_non_exhaustive()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

impl TarWriter {
    pub(crate) fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// A directory `path` (relative, without a trailing slash).
    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .with_context(|| format!("cannot add the directory {path} to a tar archive"))
    }

    /// A regular file `path` holding `data`.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.builder
            .append_data(&mut h, path, data)
            .with_context(|| format!("cannot add the file {path} to a tar archive"))
    }

    /// A symbolic link `path` to `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut h, path, target)
            .with_context(|| format!("cannot add the link {path} to a tar archive"))
    }

    /// The finished archive.
    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        self.builder
            .into_inner()
            .context("cannot finish a tar archive")
    }
}

/// Adds the tree under `root` to `tar`, entries sorted by path, names relative to `root`.
/// Directories, regular files and symbolic links only; files named in `skip` (relative paths) are
/// left out.
pub(crate) fn add_tree(tar: &mut TarWriter, root: &Path, skip: &[&str]) -> Result<()> {
    add_dir_entries(tar, root, "", skip)
}

fn add_dir_entries(tar: &mut TarWriter, root: &Path, rel: &str, skip: &[&str]) -> Result<()> {
    let dir = root.join(rel);
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().into_string().map_err(|name| {
            anyhow::anyhow!("{} has a name that is not UTF-8: {name:?}", dir.display())
        })?;
        names.push(name);
    }
    names.sort();
    for name in names {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if skip.contains(&path.as_str()) {
            continue;
        }
        let full = root.join(&path);
        let meta = std::fs::symlink_metadata(&full)
            .with_context(|| format!("cannot read {}", full.display()))?;
        let mode = meta.permissions().mode();
        let kind = meta.file_type();
        if kind.is_dir() {
            tar.dir(&path, mode)?;
            add_dir_entries(tar, root, &path, skip)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&full)
                .with_context(|| format!("cannot read the link {}", full.display()))?;
            let target = target
                .to_str()
                .with_context(|| format!("the link {} is not UTF-8", full.display()))?;
            tar.symlink(&path, target)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                bail!(
                    "{} has hard links, which an image layer built here does not keep",
                    full.display()
                );
            }
            let data =
                std::fs::read(&full).with_context(|| format!("cannot read {}", full.display()))?;
            tar.file(&path, mode, &data)?;
        } else {
            bail!(
                "{} is neither a directory, a regular file nor a symbolic link",
                full.display()
            );
        }
    }
    Ok(())
}

/// `data` gzip-compressed with a fixed header: no file name, mtime 0, OS "Unix".
pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzBuilder::new()
        .mtime(0)
        .operating_system(3)
        .write(Vec::new(), Compression::default());
    enc.write_all(data).context("cannot compress a layer")?;
    enc.finish().context("cannot compress a layer")
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn entries(data: &[u8]) -> Vec<(String, tar::EntryType, u64, u32, Vec<u8>)> {
        let mut archive = tar::Archive::new(data);
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let path = e.path().expect("path").to_string_lossy().into_owned();
                let h = e.header().clone();
                let mut body = Vec::new();
                e.read_to_end(&mut body).expect("body");
                if h.entry_type() == tar::EntryType::Symlink {
                    body = e.link_name_bytes().expect("link name").into_owned();
                }
                (
                    path,
                    h.entry_type(),
                    h.mtime().expect("mtime"),
                    h.mode().expect("mode"),
                    body,
                )
            })
            .collect()
    }

    #[test]
    fn a_tree_becomes_sorted_fixed_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).expect("mkdir");
        std::fs::write(root.join("b/c/f"), b"data").expect("write");
        std::fs::set_permissions(root.join("b/c/f"), std::fs::Permissions::from_mode(0o751))
            .expect("chmod");
        std::fs::write(root.join("a"), b"").expect("write");
        std::fs::write(root.join("stamp"), b"x").expect("write");
        std::os::unix::fs::symlink("../a", root.join("b/l")).expect("symlink");
        let mut tar = TarWriter::new();
        add_tree(&mut tar, root, &["stamp"]).expect("tree");
        let data = tar.finish().expect("finish");
        let got = entries(&data);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["a", "b/", "b/c/", "b/c/f", "b/l"]);
        assert!(got.iter().all(|e| e.2 == MTIME));
        assert_eq!(got[3].1, tar::EntryType::Regular);
        assert_eq!(got[3].3, 0o751);
        assert_eq!(got[3].4, b"data");
        assert_eq!(got[4].1, tar::EntryType::Symlink);
        assert_eq!(got[4].4, b"../a");
        assert_eq!(got[1].1, tar::EntryType::Directory);
    }

    #[test]
    fn gzip_is_deterministic_and_round_trips() {
        let a = gzip(b"hello hello hello").expect("gzip");
        let b = gzip(b"hello hello hello").expect("gzip");
        assert_eq!(a, b);
        // mtime bytes 4..8 are zero, OS byte is Unix.
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_eq!(a[9], 3);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(a.as_slice())
            .read_to_end(&mut out)
            .expect("gunzip");
        assert_eq!(out, b"hello hello hello");
    }
}
