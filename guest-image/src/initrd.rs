//! The initrd's contents and layout (see the crate docs for the table), written as a cpio newc
//! archive and gzip-compressed.

use std::collections::BTreeSet;
use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::cpio::{CpioError, CpioWriter};
use crate::{GUEST_INIT_PATH, GUEST_MODULE_DIR, GUEST_MODULE_LIST};

/// Errors of building an initrd.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// Writing the archive failed.
    #[error("cannot write the initrd archive")]
    Cpio(#[from] CpioError),
    /// Compressing failed.
    #[error("cannot compress the initrd")]
    Compress(#[source] std::io::Error),
    /// A module file name is not a plain `<name>.ko`.
    #[error("module file name {0:?} is not a plain `<name>.ko` name")]
    BadModuleName(String),
    /// Two modules have the same file name.
    #[error("module file name {0:?} appears twice")]
    DuplicateModule(String),
}

/// One module file in the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdModule {
    /// Its file name under `/lib/modules`, for example `virtio_ring.ko`.
    pub file_name: String,
    /// The `.ko` bytes.
    pub data: Vec<u8>,
}

/// Everything that goes into the initrd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitrdContents {
    /// The agent executable, installed as `/init`.
    pub agent: Vec<u8>,
    /// The modules, in load order.
    pub modules: Vec<InitrdModule>,
}

/// Empty directories created for the agent to mount onto, with their modes.
pub const MOUNT_POINTS: &[(&str, u32)] = &[
    ("/dev", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/run", 0o755),
    ("/tmp", 0o1777),
    ("/mnt", 0o755),
];

/// `/dev/console`: character device 5:1.
pub const CONSOLE: (&str, u32, u32) = ("/dev/console", 5, 1);

impl InitrdContents {
    /// The text of `/etc/vc/modules`: file names in load order, one per line.
    pub fn module_list(&self) -> String {
        self.modules
            .iter()
            .map(|m| format!("{}\n", m.file_name))
            .collect()
    }

    fn check(&self) -> Result<(), InitrdError> {
        let mut seen = BTreeSet::new();
        for m in &self.modules {
            let name = &m.file_name;
            let plain = name.len() > 3
                && name.ends_with(".ko")
                && !name.contains('/')
                && !name.contains('\0')
                && !name.contains('\n');
            if !plain {
                return Err(InitrdError::BadModuleName(name.clone()));
            }
            if !seen.insert(name) {
                return Err(InitrdError::DuplicateModule(name.clone()));
            }
        }
        Ok(())
    }

    /// Writes the uncompressed cpio archive to `w` and returns it.
    pub fn write_cpio<W: Write>(&self, w: W) -> Result<W, InitrdError> {
        self.check()?;
        let mut cpio = CpioWriter::new(w);
        for (dir, mode) in MOUNT_POINTS {
            cpio.dir(dir, *mode)?;
        }
        let (console, major, minor) = CONSOLE;
        cpio.char_device(console, 0o600, major, minor)?;
        for dir in ["/etc", "/etc/vc", "/lib", GUEST_MODULE_DIR] {
            cpio.dir(dir, 0o755)?;
        }
        cpio.file(GUEST_MODULE_LIST, 0o644, self.module_list().as_bytes())?;
        for m in &self.modules {
            cpio.file(
                &format!("{GUEST_MODULE_DIR}/{}", m.file_name),
                0o644,
                &m.data,
            )?;
        }
        cpio.file(GUEST_INIT_PATH, 0o755, &self.agent)?;
        Ok(cpio.finish()?)
    }

    /// Writes the gzip-compressed cpio archive (the initrd file) to `w` and returns it.
    pub fn write_gzip<W: Write>(&self, w: W) -> Result<W, InitrdError> {
        let gz = GzEncoder::new(w, Compression::best());
        let gz = self.write_cpio(gz)?;
        gz.finish().map_err(InitrdError::Compress)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::cpio::reader;

    fn contents() -> InitrdContents {
        InitrdContents {
            agent: b"\x7fELF agent".to_vec(),
            modules: vec![
                InitrdModule {
                    file_name: "virtio_ring.ko".into(),
                    data: b"ring".to_vec(),
                },
                InitrdModule {
                    file_name: "virtio.ko".into(),
                    data: b"virtio".to_vec(),
                },
            ],
        }
    }

    #[test]
    fn layout() {
        let archive = contents().write_cpio(Vec::new()).expect("write");
        let entries = reader::read(&archive);
        let find = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        for dir in [
            "dev",
            "proc",
            "sys",
            "run",
            "tmp",
            "mnt",
            "etc/vc",
            "lib/modules",
        ] {
            assert_eq!(find(dir).mode & 0o170_000, 0o040_000, "{dir} is a dir");
        }
        assert_eq!(find("tmp").mode & 0o7777, 0o1777);
        let console = find("dev/console");
        assert_eq!(console.mode, 0o020_600);
        assert_eq!(console.rdev, (5, 1));
        let init = find("init");
        assert_eq!(init.mode, 0o100_755);
        assert_eq!(init.data, b"\x7fELF agent");
        assert_eq!(find("etc/vc/modules").data, b"virtio_ring.ko\nvirtio.ko\n");
        assert_eq!(find("lib/modules/virtio.ko").data, b"virtio");
        // every parent directory comes before its children
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                let p = entries
                    .iter()
                    .position(|x| x.path == parent)
                    .expect("parent");
                assert!(p < i, "{parent} before {}", e.path);
            }
        }
    }

    #[test]
    fn gzip_round_trip() {
        let c = contents();
        let gz = c.write_gzip(Vec::new()).expect("write");
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut raw)
            .expect("gunzip");
        assert_eq!(raw, c.write_cpio(Vec::new()).expect("write"));
        assert_eq!(
            gz,
            c.write_gzip(Vec::new()).expect("write"),
            "deterministic"
        );
    }

    #[test]
    fn bad_module_names() {
        for bad in ["x", ".ko", "a/b.ko", "a.ko\n", "a.o"] {
            let mut c = contents();
            c.modules[0].file_name = bad.into();
            assert!(
                matches!(c.write_cpio(Vec::new()), Err(InitrdError::BadModuleName(_))),
                "{bad:?}"
            );
        }
        let mut c = contents();
        c.modules[1].file_name = "virtio_ring.ko".into();
        assert!(matches!(
            c.write_cpio(Vec::new()),
            Err(InitrdError::DuplicateModule(_))
        ));
    }
}
