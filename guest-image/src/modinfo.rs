//! A kernel module's `.modinfo` section: NUL-separated `key=value` strings written by modpost.
//! We read `name=`, `depends=` (comma-separated module names) and `vermagic=`.

use std::path::Path;

use crate::elf::{self, ElfError};

/// Errors of reading a module's `.modinfo`.
#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    /// The module file could not be read.
    #[error("cannot read the module file")]
    Io(#[from] std::io::Error),
    /// The module file is not an ELF object.
    #[error("the module is not an ELF object")]
    Elf(#[from] ElfError),
    /// There is no `.modinfo` section.
    #[error("the module has no .modinfo section")]
    NoSection,
    /// The `.modinfo` section has no `name=` entry.
    #[error("the .modinfo section has no name= entry")]
    NoName,
    /// An entry is not UTF-8.
    #[error("a .modinfo entry is not UTF-8")]
    NotUtf8,
}

/// What we need to know about a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// The module's name (`name=`), as the kernel knows it (underscores, no `.ko`).
    pub name: String,
    /// Modules this module needs loaded first (`depends=`), in the order listed.
    pub depends: Vec<String>,
    /// The kernel release and options the module was built for (`vermagic=`), if present.
    pub vermagic: Option<String>,
}

impl ModInfo {
    /// Reads the module file at `path`.
    pub fn read(path: &Path) -> Result<Self, ModInfoError> {
        let data = std::fs::read(path)?;
        Self::from_elf(&data)
    }

    /// Parses the `.modinfo` section of the module file `data`.
    pub fn from_elf(data: &[u8]) -> Result<Self, ModInfoError> {
        let section = elf::section_data(data, ".modinfo")?.ok_or(ModInfoError::NoSection)?;
        Self::from_section(section)
    }

    /// Parses the raw contents of a `.modinfo` section.
    pub fn from_section(section: &[u8]) -> Result<Self, ModInfoError> {
        let mut name = None;
        let mut depends = Vec::new();
        let mut vermagic = None;
        for entry in section.split(|b| *b == 0).filter(|e| !e.is_empty()) {
            let entry = std::str::from_utf8(entry).map_err(|_| ModInfoError::NotUtf8)?;
            let Some((key, value)) = entry.split_once('=') else {
                continue;
            };
            match key {
                "name" => name = Some(value.to_owned()),
                "depends" => {
                    depends = value
                        .split(',')
                        .map(str::trim)
                        .filter(|d| !d.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "vermagic" => vermagic = Some(value.to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            name: name.ok_or(ModInfoError::NoName)?,
            depends,
            vermagic,
        })
    }

    /// The kernel release the module was built for: the first word of `vermagic=`.
    pub fn kernel_release(&self) -> Option<&str> {
        self.vermagic.as_deref()?.split_whitespace().next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::test_elf;

    const SECTION: &[u8] = b"license=GPL\0description=x\0\0\0depends=virtio,virtio_ring\0retpoline=Y\0intree=Y\0name=virtio_blk\0vermagic=6.1.0-56-cloud-amd64 SMP mod_unload modversions \0";

    #[test]
    fn parses_fields() {
        let info = ModInfo::from_section(SECTION).expect("parse");
        assert_eq!(info.name, "virtio_blk");
        assert_eq!(info.depends, ["virtio", "virtio_ring"]);
        assert_eq!(info.kernel_release(), Some("6.1.0-56-cloud-amd64"));
    }

    #[test]
    fn empty_depends() {
        let info = ModInfo::from_section(b"depends=\0name=vsock\0").expect("parse");
        assert_eq!(info.name, "vsock");
        assert!(info.depends.is_empty());
        assert_eq!(info.vermagic, None);
        assert_eq!(info.kernel_release(), None);
    }

    #[test]
    fn missing_name_is_an_error() {
        assert!(matches!(
            ModInfo::from_section(b"depends=a\0"),
            Err(ModInfoError::NoName)
        ));
    }

    #[test]
    fn non_utf8_is_an_error() {
        assert!(matches!(
            ModInfo::from_section(b"name=\xff\0"),
            Err(ModInfoError::NotUtf8)
        ));
    }

    #[test]
    fn reads_from_elf() {
        let f = test_elf::relocatable_with_modinfo(SECTION);
        assert_eq!(ModInfo::from_elf(&f).expect("parse").name, "virtio_blk");
    }

    #[test]
    fn elf_without_modinfo() {
        let f = test_elf::executable(false);
        assert!(matches!(
            ModInfo::from_elf(&f),
            Err(ModInfoError::NoSection)
        ));
    }

    #[test]
    fn reads_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("virtio_blk.ko");
        std::fs::write(&path, test_elf::relocatable_with_modinfo(SECTION)).expect("write");
        assert_eq!(ModInfo::read(&path).expect("read").depends.len(), 2);
        assert!(matches!(
            ModInfo::read(&dir.path().join("missing.ko")),
            Err(ModInfoError::Io(_))
        ));
    }
}
