//! Which kernel modules the guest needs, and where they are in a kernel's module tree.
//!
//! The list names what the guest uses; their dependencies (for example `virtio_pci` needs
//! `virtio_pci_modern_dev` and `virtio_pci_legacy_dev`) are found from each module's `.modinfo`
//! by [`crate::resolve`]. A module the kernel has built in (listed in `modules.builtin`) is not
//! shipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules the guest needs, in a sensible order (dependency order is computed, not assumed).
pub const GUEST_MODULES: &[&str] = &[
    // virtio core and the two transports (microvm uses MMIO, q35 uses PCI)
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_pci",
    // vsock: the agent's control channel and the process streams
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    // network interfaces (virtio_net needs net_failover, which needs failover)
    "failover",
    "net_failover",
    "virtio_net",
    // block devices
    "virtio_blk",
    // the per-pod shared directory (virtio-fs)
    "fuse",
    "virtiofs",
    // layered container root filesystems
    "overlay",
    // free page reporting: the guest returns the memory it frees to the host
    "virtio_balloon",
];

/// The kernel's name for a module file name: no `.ko` suffix, `-` turned into `_`.
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(".ko")?;
    Some(stem.replace('-', "_"))
}

/// Errors of scanning a module tree.
#[derive(Debug, thiserror::Error)]
pub enum ModuleTreeError {
    /// A directory or file of the tree could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The same module name appears twice (several kernel versions under one directory?).
    #[error("module `{name}` is in the tree twice: {first} and {second}; pass one kernel's module directory")]
    Duplicate {
        /// The module name.
        name: String,
        /// The first file found.
        first: PathBuf,
        /// The second file found.
        second: PathBuf,
    },
    /// The directory holds no module at all.
    #[error("{root} holds no kernel module (.ko) and no modules.builtin")]
    Empty {
        /// The scanned directory.
        root: PathBuf,
    },
}

/// Where a module is in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// An uncompressed `.ko` file.
    File(&'a Path),
    /// Only a compressed file (`.ko.xz`, `.ko.zst`, `.ko.gz`) exists.
    Compressed(&'a Path),
    /// Built into the kernel.
    Builtin,
    /// Not there.
    Missing,
}

/// An index of one kernel's module tree (for example `lib/modules/<release>`), by module name.
#[derive(Debug, Clone, Default)]
pub struct ModuleTree {
    root: PathBuf,
    files: BTreeMap<String, PathBuf>,
    compressed: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

const COMPRESSED_SUFFIXES: &[&str] = &[".xz", ".zst", ".gz"];

impl ModuleTree {
    /// Scans `root` recursively (symbolic links are not followed) for module files and
    /// `modules.builtin`.
    pub fn scan(root: &Path) -> Result<Self, ModuleTreeError> {
        let mut tree = Self {
            root: root.to_owned(),
            ..Self::default()
        };
        let mut dirs = vec![root.to_owned()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| ModuleTreeError::Io {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| ModuleTreeError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let path = entry.path();
                let file_type = entry.file_type().map_err(|source| ModuleTreeError::Io {
                    path: path.clone(),
                    source,
                })?;
                if file_type.is_dir() {
                    dirs.push(path);
                } else if file_type.is_file() {
                    tree.add_file(path)?;
                }
            }
        }
        if tree.files.is_empty() && tree.compressed.is_empty() && tree.builtin.is_empty() {
            return Err(ModuleTreeError::Empty {
                root: root.to_owned(),
            });
        }
        Ok(tree)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<(), ModuleTreeError> {
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            return Ok(());
        };
        if file_name == "modules.builtin" {
            let text = std::fs::read_to_string(&path).map_err(|source| ModuleTreeError::Io {
                path: path.clone(),
                source,
            })?;
            self.builtin.extend(parse_builtin(&text));
            return Ok(());
        }
        if let Some(name) = module_name(file_name) {
            return insert_unique(&mut self.files, name, path);
        }
        for suffix in COMPRESSED_SUFFIXES {
            if let Some(name) = file_name.strip_suffix(suffix).and_then(module_name) {
                return insert_unique(&mut self.compressed, name, path);
            }
        }
        Ok(())
    }

    /// The directory that was scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of module files (compressed or not) in the tree.
    pub fn len(&self) -> usize {
        self.files.len() + self.compressed.len()
    }

    /// Whether the tree has no module file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where module `name` is.
    pub fn lookup(&self, name: &str) -> Lookup<'_> {
        let name = name.replace('-', "_");
        if let Some(path) = self.files.get(&name) {
            Lookup::File(path)
        } else if let Some(path) = self.compressed.get(&name) {
            Lookup::Compressed(path)
        } else if self.builtin.contains(&name) {
            Lookup::Builtin
        } else {
            Lookup::Missing
        }
    }
}

fn insert_unique(
    map: &mut BTreeMap<String, PathBuf>,
    name: String,
    path: PathBuf,
) -> Result<(), ModuleTreeError> {
    if let Some(first) = map.get(&name) {
        return Err(ModuleTreeError::Duplicate {
            name,
            first: first.clone(),
            second: path,
        });
    }
    map.insert(name, path);
    Ok(())
}

/// Module names of a `modules.builtin` file (lines like `kernel/fs/ext4/ext4.ko`).
pub fn parse_builtin(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .filter_map(|line| line.trim().rsplit('/').next())
        .filter_map(module_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_files() {
        assert_eq!(module_name("virtio-rng.ko").as_deref(), Some("virtio_rng"));
        assert_eq!(module_name("vsock.ko").as_deref(), Some("vsock"));
        assert_eq!(module_name("vsock.ko.xz"), None);
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn builtin_list() {
        let names: Vec<_> =
            parse_builtin("kernel/fs/ext4/ext4.ko\nkernel/drivers/char/hw-random.ko\n\n").collect();
        assert_eq!(names, ["ext4", "hw_random"]);
    }

    #[test]
    fn guest_list_has_no_duplicates() {
        let set: BTreeSet<_> = GUEST_MODULES.iter().collect();
        assert_eq!(set.len(), GUEST_MODULES.len());
    }

    #[test]
    fn scans_a_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("6.1.0-test");
        let sub = root.join("kernel/drivers/virtio");
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join("virtio_ring.ko"), b"x").expect("write");
        std::fs::write(sub.join("virtio-mem.ko.xz"), b"x").expect("write");
        std::fs::write(root.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").expect("write");
        std::fs::write(root.join("modules.order"), "").expect("write");
        std::os::unix::fs::symlink("/nonexistent", root.join("build")).expect("symlink");

        // Scanning the parent finds the same (one release below it).
        for scan_root in [&root, &dir.path().to_owned()] {
            let tree = ModuleTree::scan(scan_root).expect("scan");
            assert_eq!(tree.len(), 2);
            assert_eq!(
                tree.lookup("virtio_ring"),
                Lookup::File(&sub.join("virtio_ring.ko"))
            );
            assert_eq!(
                tree.lookup("virtio_mem"),
                Lookup::Compressed(&sub.join("virtio-mem.ko.xz"))
            );
            assert_eq!(tree.lookup("ext4"), Lookup::Builtin);
            assert_eq!(tree.lookup("overlay"), Lookup::Missing);
        }
    }

    #[test]
    fn duplicate_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for v in ["a", "b"] {
            let d = dir.path().join(v);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("vsock.ko"), b"x").expect("write");
        }
        let err = ModuleTree::scan(dir.path()).expect_err("duplicate");
        assert!(matches!(err, ModuleTreeError::Duplicate { ref name, .. } if name == "vsock"));
    }

    #[test]
    fn empty_or_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            ModuleTree::scan(dir.path()),
            Err(ModuleTreeError::Empty { .. })
        ));
        assert!(matches!(
            ModuleTree::scan(&dir.path().join("nope")),
            Err(ModuleTreeError::Io { .. })
        ));
    }
}
