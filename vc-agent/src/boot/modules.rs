//! Kernel modules of the image, loaded with `finit_module` in the order of
//! [`MODULE_LIST`] (dependencies first, written by the image builder).
//!
//! The list is loaded in two steps ([`split_at_vsock`]): up to the vsock
//! transport before the listener comes up, single-threaded; the rest
//! (network, block, virtio-fs, overlay, balloon) in the background once the
//! listener is up ([`crate::agent::LateModules`]), so that the host's
//! handshake does not wait for modules it does not need.

use std::ffi::CStr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use thiserror::Error;

/// The list of module file names, one per line, in load order.
pub const MODULE_LIST: &str = "/etc/vc/modules";

/// Where the module files are.
pub const MODULE_DIR: &str = "/lib/modules";

/// The last module the vsock listener needs: the virtio vsock transport.
pub const VSOCK_TRANSPORT: &str = "vmw_vsock_virtio_transport.ko";

/// Why the modules could not be loaded.
#[derive(Debug, Error)]
pub enum ModuleError {
    /// The list exists but cannot be read.
    #[error("cannot read the module list {path}")]
    List {
        /// Path of the list.
        path: PathBuf,
        /// The read error.
        #[source]
        source: std::io::Error,
    },
    /// A module file cannot be opened.
    #[error("cannot open kernel module {name} at {path}")]
    Open {
        /// Module file name.
        name: String,
        /// Full path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a module.
    #[error("cannot load kernel module {name}: finit_module failed with {errno}")]
    Load {
        /// Module file name.
        name: String,
        /// The errno of `finit_module`.
        errno: Errno,
    },
}

/// Reads the module list: non-empty lines, `#` starts a comment.
pub fn read_list(path: &Path) -> Result<Vec<String>, ModuleError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ModuleError::List {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(parse_list(&text))
}

fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Loads one module file. A module that is already loaded (`EEXIST`) is fine.
pub fn load_module(name: &str, dir: &Path) -> Result<(), ModuleError> {
    let path = dir.join(name);
    let file = std::fs::File::open(&path).map_err(|source| ModuleError::Open {
        name: name.to_owned(),
        path: path.clone(),
        source,
    })?;
    let params: &CStr = c"";
    // SAFETY: finit_module reads the open module file and the NUL-terminated
    // parameter string; both outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    match Errno::last() {
        Errno::EEXIST => Ok(()),
        errno => Err(ModuleError::Load {
            name: name.to_owned(),
            errno,
        }),
    }
}

/// Splits a load-ordered list after [`VSOCK_TRANSPORT`]: what the vsock
/// listener needs (the transport and everything before it, its
/// dependencies), and the rest. A list without the transport (a kernel that
/// has it built in) is loaded whole before the listener.
pub fn split_at_vsock(mut names: Vec<String>) -> (Vec<String>, Vec<String>) {
    match names.iter().position(|n| n == VSOCK_TRANSPORT) {
        Some(i) => {
            let rest = names.split_off(i + 1);
            (names, rest)
        }
        None => (names, Vec::new()),
    }
}

/// Loads `names` from `dir`, in order. The first failure is returned and
/// stops the loading.
pub fn load_list(names: &[String], dir: &Path) -> Result<(), ModuleError> {
    for name in names {
        let start = std::time::Instant::now();
        load_module(name, dir)?;
        tracing::debug!(module = %name, elapsed_us = start.elapsed().as_micros() as u64, "module loaded");
    }
    Ok(())
}

/// Reads [`MODULE_LIST`], loads from [`MODULE_DIR`] what the vsock listener
/// needs and returns the names loaded and those left for later
/// ([`split_at_vsock`]).
pub fn load_modules() -> Result<(Vec<String>, Vec<String>), ModuleError> {
    let (early, late) = split_at_vsock(read_list(Path::new(MODULE_LIST))?);
    load_list(&early, Path::new(MODULE_DIR))?;
    Ok((early, late))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_skips_blanks_and_comments() {
        assert_eq!(
            parse_list("virtio_ring.ko\n\n  virtio.ko  \n# comment\nvsock.ko # trailing\n"),
            ["virtio_ring.ko", "virtio.ko", "vsock.ko"]
        );
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_list_splits_after_the_vsock_transport() {
        let list = names(&["virtio.ko", "vsock.ko", VSOCK_TRANSPORT, "virtio_net.ko"]);
        assert_eq!(
            split_at_vsock(list),
            (
                names(&["virtio.ko", "vsock.ko", VSOCK_TRANSPORT]),
                names(&["virtio_net.ko"])
            )
        );
        let built_in = names(&["virtio.ko", "overlay.ko"]);
        assert_eq!(split_at_vsock(built_in.clone()), (built_in, Vec::new()));
    }

    #[test]
    fn missing_module_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_module("nope.ko", dir.path()).expect_err("missing");
        assert!(err.to_string().contains("nope.ko"), "{err}");
    }

    #[test]
    fn refused_module_names_it_and_the_errno() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("junk.ko"), b"not an elf").expect("write");
        let err = load_module("junk.ko", dir.path()).expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("junk.ko") && text.contains("finit_module"),
            "{text}"
        );
    }
}
