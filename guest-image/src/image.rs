//! Building a guest image directory from a kernel, its module tree and the agent executable.
//!
//! The build is incremental: a digest of every input (kernel, agent, each shipped module, versions,
//! the builder's own layout version) is stored in the manifest; when it matches and the files on
//! disk still match the manifest, nothing is written. Files are written under temporary names and
//! renamed, the manifest last, so an interrupted build is rebuilt on the next run.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::elf::{self, ElfError, Linkage};
use crate::hash::to_hex;
use crate::initrd::{InitrdContents, InitrdError, InitrdModule};
use crate::kernel::{self, KernelError};
use crate::manifest::{FileDigest, Manifest, ManifestError, ManifestModule, MANIFEST_FORMAT};
use crate::modules::{ModuleTree, ModuleTreeError, GUEST_MODULES};
use crate::resolve::{resolve, ResolveError};
use crate::{ImagePaths, INITRD_FILE, KERNEL_FILE, MAX_INITRD_SIZE};

/// Bumped whenever the initrd layout or the manifest's meaning changes, so old images get rebuilt.
const LAYOUT_VERSION: u32 = 1;

/// Errors of building an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An input file could not be read.
    #[error("cannot read the {what} {path}")]
    Read {
        /// What the file is ("kernel", "agent", "module").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The kernel image is not usable.
    #[error("cannot read the kernel release from {path}")]
    Kernel {
        /// The kernel file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: KernelError,
    },
    /// The module tree could not be scanned.
    #[error("cannot scan the module tree")]
    ModuleTree(#[from] ModuleTreeError),
    /// The modules could not be resolved.
    #[error("cannot resolve the guest modules")]
    Resolve(#[from] ResolveError),
    /// A module was built for another kernel release.
    #[error(
        "module `{module}` was built for kernel {module_release}, the kernel is {kernel_release}"
    )]
    KernelMismatch {
        /// The module.
        module: String,
        /// The release in its vermagic.
        module_release: String,
        /// The kernel's release.
        kernel_release: String,
    },
    /// The agent is not a valid ELF file.
    #[error("the agent {path} is not a valid ELF file")]
    AgentElf {
        /// The agent.
        path: PathBuf,
        /// The cause.
        #[source]
        source: ElfError,
    },
    /// The agent is not an x86-64 executable.
    #[error("the agent {path} is not an x86-64 executable")]
    AgentNotExecutable {
        /// The agent.
        path: PathBuf,
    },
    /// The agent needs a dynamic loader, which the initrd does not have.
    #[error("the agent {path} is dynamically linked; build it with -C target-feature=+crt-static")]
    AgentDynamic {
        /// The agent.
        path: PathBuf,
    },
    /// The initrd could not be built.
    #[error("cannot build the initrd")]
    Initrd(#[from] InitrdError),
    /// The compressed initrd is larger than [`MAX_INITRD_SIZE`].
    #[error("the compressed initrd is {size} bytes, more than the limit of {max} bytes")]
    InitrdTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The manifest built is inconsistent (a bug).
    #[error("the built manifest is inconsistent")]
    Manifest(#[from] ManifestError),
}

/// What an image is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInputs {
    /// The kernel image (bzImage).
    pub kernel: PathBuf,
    /// The kernel's module tree, for example `.../lib/modules/<release>`.
    pub modules_dir: PathBuf,
    /// The static agent executable.
    pub agent: PathBuf,
    /// The agent's version, recorded in the manifest.
    pub agent_version: String,
    /// Modules wanted in the guest; their dependencies are added.
    pub modules: Vec<String>,
}

impl ImageInputs {
    /// Inputs with the default module list [`GUEST_MODULES`].
    pub fn new(
        kernel: PathBuf,
        modules_dir: PathBuf,
        agent: PathBuf,
        agent_version: String,
    ) -> Self {
        Self {
            kernel,
            modules_dir,
            agent,
            agent_version,
            modules: GUEST_MODULES.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutcome {
    /// The manifest of the image now in the output directory.
    pub manifest: Manifest,
    /// False when the image was already up to date and nothing was written.
    pub rebuilt: bool,
    /// The image's files.
    pub paths: ImagePaths,
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Builds (or finds up to date) the image for `inputs` in `out_dir`.
pub fn build(inputs: &ImageInputs, out_dir: &Path) -> Result<BuildOutcome, ImageError> {
    let kernel = read("kernel", &inputs.kernel)?;
    let kernel_release = kernel::release(&kernel).map_err(|source| ImageError::Kernel {
        path: inputs.kernel.clone(),
        source,
    })?;

    let agent = read("agent", &inputs.agent)?;
    check_agent(&inputs.agent, &agent)?;

    let tree = ModuleTree::scan(&inputs.modules_dir)?;
    let wanted: Vec<&str> = inputs.modules.iter().map(String::as_str).collect();
    let resolution = resolve(&tree, &wanted)?;
    let mut modules = Vec::with_capacity(resolution.load_order.len());
    let mut manifest_modules = Vec::with_capacity(resolution.load_order.len());
    for m in &resolution.load_order {
        if let Some(module_release) = m.info.kernel_release() {
            if module_release != kernel_release {
                return Err(ImageError::KernelMismatch {
                    module: m.name.clone(),
                    module_release: module_release.to_owned(),
                    kernel_release,
                });
            }
        }
        modules.push(InitrdModule {
            file_name: m.file_name(),
            data: read("module", &m.path)?,
        });
        manifest_modules.push(ManifestModule {
            name: m.name.clone(),
            file: m.file_name(),
            depends: m.info.depends.clone(),
        });
    }

    let protocol_version = vc_proto::PROTOCOL_VERSION;
    let inputs_sha256 = {
        let mut h = Sha256::new();
        h.update(format!("vc guest image layout {LAYOUT_VERSION}\n"));
        h.update(format!("kernel {}\n", to_hex(&Sha256::digest(&kernel))));
        h.update(format!("agent {}\n", to_hex(&Sha256::digest(&agent))));
        h.update(format!("agent_version {}\n", inputs.agent_version));
        h.update(format!("protocol_version {protocol_version}\n"));
        for (m, data) in manifest_modules.iter().zip(&modules) {
            h.update(format!(
                "module {} {} {} [{}]\n",
                m.name,
                m.file,
                to_hex(&Sha256::digest(&data.data)),
                m.depends.join(",")
            ));
        }
        for b in &resolution.builtin {
            h.update(format!("builtin {b}\n"));
        }
        to_hex(&h.finalize())
    };

    let paths = ImagePaths::in_dir(out_dir);
    if let Ok(existing) = Manifest::load(out_dir) {
        if existing.inputs_sha256 == inputs_sha256 && existing.verify_files(out_dir).is_ok() {
            tracing::debug!(dir = %out_dir.display(), "guest image is up to date");
            return Ok(BuildOutcome {
                manifest: existing,
                rebuilt: false,
                paths,
            });
        }
    }

    let agent_digest = FileDigest::of(&agent);
    let contents = InitrdContents { agent, modules };
    let initrd = contents.write_gzip(Vec::new())?;
    let initrd_size = initrd.len() as u64;
    if initrd_size > MAX_INITRD_SIZE {
        return Err(ImageError::InitrdTooLarge {
            size: initrd_size,
            max: MAX_INITRD_SIZE,
        });
    }

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        kernel_version: kernel_release,
        agent_version: inputs.agent_version.clone(),
        protocol_version,
        modules: manifest_modules,
        builtin_modules: resolution.builtin,
        agent: agent_digest,
        files: [
            (KERNEL_FILE.to_owned(), FileDigest::of(&kernel)),
            (INITRD_FILE.to_owned(), FileDigest::of(&initrd)),
        ]
        .into_iter()
        .collect(),
        inputs_sha256,
    };
    manifest.check_load_order()?;

    std::fs::create_dir_all(out_dir).map_err(|source| ImageError::Write {
        path: out_dir.to_owned(),
        source,
    })?;
    match std::fs::remove_file(&paths.manifest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ImageError::Write {
                path: paths.manifest.clone(),
                source,
            })
        }
    }
    write_atomic(&paths.kernel, &kernel)?;
    write_atomic(&paths.initrd, &initrd)?;
    write_atomic(&paths.manifest, manifest.to_json().as_bytes())?;
    tracing::info!(
        dir = %out_dir.display(),
        kernel = %manifest.kernel_version,
        modules = manifest.modules.len(),
        initrd_size,
        "guest image built"
    );
    Ok(BuildOutcome {
        manifest,
        rebuilt: true,
        paths,
    })
}

fn check_agent(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    match elf::x86_64_executable_linkage(data) {
        Err(source) => Err(ImageError::AgentElf {
            path: path.to_owned(),
            source,
        }),
        Ok(None) => Err(ImageError::AgentNotExecutable {
            path: path.to_owned(),
        }),
        Ok(Some(Linkage::Dynamic)) => Err(ImageError::AgentDynamic {
            path: path.to_owned(),
        }),
        Ok(Some(Linkage::Static)) => Ok(()),
    }
}

/// Writes `data` to a temporary file named after this process and renames it to `path`, so that
/// readers and concurrent builds into the same directory never see a partial file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let err = |source| ImageError::Write {
        path: path.to_owned(),
        source,
    };
    if let Err(e) = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::test_elf;

    struct Fixture {
        _dir: tempfile::TempDir,
        inputs: ImageInputs,
        out: PathBuf,
    }

    fn kernel_image(release: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x400u16.to_le_bytes());
        let v = format!("{release} (test) #1 SMP\0");
        img[0x600..0x600 + v.len()].copy_from_slice(v.as_bytes());
        img
    }

    fn module(name: &str, deps: &str, release: &str) -> Vec<u8> {
        let info = format!("name={name}\0depends={deps}\0vermagic={release} SMP mod_unload \0");
        test_elf::relocatable_with_modinfo(info.as_bytes())
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let mods = root.join("lib/modules/6.1.0-test/kernel");
        std::fs::create_dir_all(&mods).expect("mkdir");
        std::fs::write(
            mods.join("virtio_ring.ko"),
            module("virtio_ring", "", "6.1.0-test"),
        )
        .expect("w");
        std::fs::write(
            mods.join("virtio.ko"),
            module("virtio", "virtio_ring", "6.1.0-test"),
        )
        .expect("w");
        std::fs::write(
            mods.join("virtio_blk.ko"),
            module("virtio_blk", "virtio,virtio_ring", "6.1.0-test"),
        )
        .expect("w");
        std::fs::write(mods.join("unused.ko"), module("unused", "", "6.1.0-test")).expect("w");
        std::fs::write(
            root.join("lib/modules/6.1.0-test/modules.builtin"),
            "kernel/fs/overlayfs/overlay.ko\n",
        )
        .expect("w");
        std::fs::write(root.join("vmlinuz"), kernel_image("6.1.0-test")).expect("w");
        std::fs::write(root.join("agent"), test_elf::executable(false)).expect("w");
        let inputs = ImageInputs {
            kernel: root.join("vmlinuz"),
            modules_dir: root.join("lib/modules/6.1.0-test"),
            agent: root.join("agent"),
            agent_version: "0.1.0".into(),
            modules: vec!["virtio_blk".into(), "overlay".into()],
        };
        let out = root.join("out");
        Fixture {
            _dir: dir,
            inputs,
            out,
        }
    }

    #[test]
    fn builds_then_skips_then_rebuilds_on_change() {
        let f = fixture();
        let first = build(&f.inputs, &f.out).expect("build");
        assert!(first.rebuilt);
        let m = &first.manifest;
        assert_eq!(m.kernel_version, "6.1.0-test");
        assert_eq!(m.protocol_version, vc_proto::PROTOCOL_VERSION);
        let names: Vec<_> = m.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk"]);
        assert_eq!(m.builtin_modules, ["overlay"]);
        m.verify_files(&f.out).expect("files match");
        assert_eq!(&Manifest::load(&f.out).expect("load"), m);

        let second = build(&f.inputs, &f.out).expect("build");
        assert!(!second.rebuilt, "unchanged inputs must not rebuild");
        assert_eq!(&second.manifest, m);

        // A changed agent rebuilds.
        let mut agent = test_elf::executable(false);
        agent.push(0);
        std::fs::write(&f.inputs.agent, agent).expect("w");
        let third = build(&f.inputs, &f.out).expect("build");
        assert!(third.rebuilt);
        assert_ne!(third.manifest.agent, m.agent);

        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&f.out)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");

        // A damaged output rebuilds.
        std::fs::write(&third.paths.initrd, b"broken").expect("w");
        assert!(build(&f.inputs, &f.out).expect("build").rebuilt);
    }

    #[test]
    fn dynamic_agent_is_refused() {
        let f = fixture();
        std::fs::write(&f.inputs.agent, test_elf::executable(true)).expect("w");
        let err = build(&f.inputs, &f.out).expect_err("dynamic");
        assert!(matches!(err, ImageError::AgentDynamic { .. }), "{err}");
        std::fs::write(&f.inputs.agent, b"#!/bin/sh\n").expect("w");
        assert!(matches!(
            build(&f.inputs, &f.out),
            Err(ImageError::AgentElf { .. })
        ));
        assert!(!f.out.exists(), "nothing written on failure");
    }

    #[test]
    fn module_for_another_kernel_is_refused() {
        let f = fixture();
        let path = f.inputs.modules_dir.join("kernel/virtio.ko");
        std::fs::write(path, module("virtio", "virtio_ring", "5.10.0-other")).expect("w");
        let err = build(&f.inputs, &f.out).expect_err("mismatch");
        assert_eq!(
            err.to_string(),
            "module `virtio` was built for kernel 5.10.0-other, the kernel is 6.1.0-test"
        );
    }

    #[test]
    fn missing_module_is_refused() {
        let mut f = fixture();
        f.inputs.modules.push("virtiofs".into());
        let err = build(&f.inputs, &f.out).expect_err("missing");
        assert!(matches!(
            err,
            ImageError::Resolve(ResolveError::Missing { .. })
        ));
    }
}
