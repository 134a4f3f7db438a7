//! The image manifest (`manifest.json`): what the kernel is, which modules the initrd carries in
//! which order, which agent and protocol version it has, and the size and SHA-256 of each file.
//!
//! Readers ignore fields they do not know, so fields can be added without breaking older readers;
//! [`MANIFEST_FORMAT`] changes only when a field changes meaning or is removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hash::sha256_hex;
use crate::MANIFEST_FILE;

/// Version of the manifest format.
pub const MANIFEST_FORMAT: u32 = 1;

/// Errors of reading, writing or checking a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest file could not be read or written.
    #[error("cannot access the manifest {path}")]
    Io {
        /// The manifest path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("the manifest {path} is not valid")]
    Json {
        /// The manifest path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest has a format this code does not know.
    #[error("the manifest has format {found}, this build reads format {MANIFEST_FORMAT}")]
    Format {
        /// The format found.
        found: u32,
    },
    /// A module is listed before one of its dependencies.
    #[error("module `{module}` is listed before its dependency `{dependency}`")]
    Order {
        /// The module.
        module: String,
        /// Its dependency.
        dependency: String,
    },
    /// A file does not match its recorded size or digest.
    #[error("{path} does not match the manifest ({what})")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        what: &'static str,
    },
}

/// Size and SHA-256 of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

impl FileDigest {
    /// Digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self {
            size: data.len() as u64,
            sha256: sha256_hex(data),
        }
    }
}

/// One module of the initrd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestModule {
    /// The module name.
    pub name: String,
    /// Its file name under `/lib/modules` in the initrd.
    pub file: String,
    /// The modules it depends on (from its `.modinfo`).
    #[serde(default)]
    pub depends: Vec<String>,
}

/// The manifest of a guest image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of the writer.
    pub format: u32,
    /// The kernel release (`uname -r` in the guest).
    pub kernel_version: String,
    /// Version of the `vc-agent` at `/init`.
    pub agent_version: String,
    /// The vc-proto protocol version the agent speaks.
    pub protocol_version: u16,
    /// Modules in load order: every module after its dependencies.
    pub modules: Vec<ManifestModule>,
    /// Wanted modules that the kernel has built in (not shipped).
    #[serde(default)]
    pub builtin_modules: Vec<String>,
    /// The agent executable inside the initrd.
    pub agent: FileDigest,
    /// Size and SHA-256 of each file of the image directory, by file name.
    pub files: BTreeMap<String, FileDigest>,
    /// Digest of everything the image was built from; equal inputs mean nothing to rebuild.
    pub inputs_sha256: String,
}

impl Manifest {
    /// Reads `manifest.json` from the image directory `dir`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Io {
            path: path.clone(),
            source,
        })?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|source| ManifestError::Json { path, source })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format {
                found: manifest.format,
            });
        }
        Ok(manifest)
    }

    /// The manifest as pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("a manifest always serializes");
        s.push('\n');
        s
    }

    /// Checks that every module comes after those of its dependencies that are shipped
    /// (dependencies the kernel has built in are not listed).
    pub fn check_load_order(&self) -> Result<(), ManifestError> {
        for (i, m) in self.modules.iter().enumerate() {
            for dep in &m.depends {
                let pos = self.modules.iter().position(|x| &x.name == dep);
                let ok = match pos {
                    Some(pos) => pos < i,
                    None => self.builtin_modules.contains(dep),
                };
                if !ok {
                    return Err(ManifestError::Order {
                        module: m.name.clone(),
                        dependency: dep.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Checks each file of [`Manifest::files`] in `dir` against its size and SHA-256.
    pub fn verify_files(&self, dir: &Path) -> Result<(), ManifestError> {
        for (name, digest) in &self.files {
            let path = dir.join(name);
            let meta = std::fs::metadata(&path).map_err(|source| ManifestError::Io {
                path: path.clone(),
                source,
            })?;
            if meta.len() != digest.size {
                return Err(ManifestError::Mismatch { path, what: "size" });
            }
            let data = std::fs::read(&path).map_err(|source| ManifestError::Io {
                path: path.clone(),
                source,
            })?;
            if sha256_hex(&data) != digest.sha256 {
                return Err(ManifestError::Mismatch {
                    path,
                    what: "sha256",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            kernel_version: "6.1.0-56-cloud-amd64".into(),
            agent_version: "0.1.0".into(),
            protocol_version: 1,
            modules: vec![
                ManifestModule {
                    name: "virtio_ring".into(),
                    file: "virtio_ring.ko".into(),
                    depends: vec![],
                },
                ManifestModule {
                    name: "virtio".into(),
                    file: "virtio.ko".into(),
                    depends: vec!["virtio_ring".into()],
                },
            ],
            builtin_modules: vec![],
            agent: FileDigest::of(b"agent"),
            files: [("vmlinuz".to_owned(), FileDigest::of(b"kernel"))]
                .into_iter()
                .collect(),
            inputs_sha256: "00".into(),
        }
    }

    #[test]
    fn json_round_trip() {
        let m = sample();
        let back: Manifest = serde_json::from_str(&m.to_json()).expect("parse");
        assert_eq!(back, m);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).expect("parse");
        v["added_later"] = serde_json::json!({"x": 1});
        let back: Manifest = serde_json::from_value(v).expect("parse");
        assert_eq!(back, sample());
    }

    #[test]
    fn load_order_check() {
        let mut m = sample();
        m.check_load_order().expect("ordered");
        m.modules.reverse();
        let err = m.check_load_order().expect_err("reversed");
        assert_eq!(
            err.to_string(),
            "module `virtio` is listed before its dependency `virtio_ring`"
        );
        m.modules.remove(1);
        assert!(m.check_load_order().is_err(), "missing dependency");
        m.builtin_modules.push("virtio_ring".into());
        m.check_load_order().expect("built-in dependency");
    }

    #[test]
    fn load_and_verify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = sample();
        std::fs::write(dir.path().join(MANIFEST_FILE), m.to_json()).expect("write");
        std::fs::write(dir.path().join("vmlinuz"), b"kernel").expect("write");
        let loaded = Manifest::load(dir.path()).expect("load");
        assert_eq!(loaded, m);
        loaded.verify_files(dir.path()).expect("verify");

        std::fs::write(dir.path().join("vmlinuz"), b"kernee").expect("write");
        assert!(matches!(
            loaded.verify_files(dir.path()),
            Err(ManifestError::Mismatch { what: "sha256", .. })
        ));
        std::fs::write(dir.path().join("vmlinuz"), b"k").expect("write");
        assert!(matches!(
            loaded.verify_files(dir.path()),
            Err(ManifestError::Mismatch { what: "size", .. })
        ));
    }

    #[test]
    fn load_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(ManifestError::Io { .. })
        ));
        std::fs::write(dir.path().join(MANIFEST_FILE), "{").expect("write");
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(ManifestError::Json { .. })
        ));
        let mut m = sample();
        m.format = 99;
        std::fs::write(dir.path().join(MANIFEST_FILE), m.to_json()).expect("write");
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(ManifestError::Format { found: 99 })
        ));
    }
}
