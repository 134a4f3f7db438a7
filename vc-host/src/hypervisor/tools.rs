//! Finding the programs a VM needs: a configured path, else `PATH`, else the
//! directory of the running program (where cargo and an install put this
//! crate's own binaries, such as `vc-console-log`, next to `virtc`), else the
//! project's tools cache (`<cache>/tools/bin`, where `cargo xtask deps`
//! installs `vhost-device-vsock` and `virtiofsd`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// QEMU's program name.
pub const QEMU: &str = "qemu-system-x86_64";
/// The hybrid vsock daemon's program name.
pub const VHOST_DEVICE_VSOCK: &str = "vhost-device-vsock";
/// The virtio-fs daemon's program name.
pub const VIRTIOFSD: &str = "virtiofsd";
/// The console logger's program name (a binary of this crate).
pub const CONSOLE_LOG: &str = "vc-console-log";

/// Why a program cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ToolError {
    /// A configured program path does not point at an executable.
    #[error("{name} at {path} is not an executable file")]
    BinaryPath {
        /// Program name.
        name: &'static str,
        /// Path given in the config.
        path: PathBuf,
    },
    /// A program is not installed.
    #[error(
        "{name} was found neither on PATH, beside this program, nor in {searched}; {}",
        install_hint(name)
    )]
    BinaryNotFound {
        /// Program name.
        name: &'static str,
        /// Where else it was looked for.
        searched: String,
    },
}

/// How to get a missing program.
fn install_hint(name: &str) -> &'static str {
    if name == CONSOLE_LOG {
        "build it with `cargo build -p vc-host --bins` (it is installed next to virtc)"
    } else {
        "install it with `cargo xtask deps`"
    }
}

/// The project's cache directory: `$VC_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/vc`, else `$HOME/.cache/vc`.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    var("VC_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("vc")))
        .or_else(|| var("HOME").map(|d| PathBuf::from(d).join(".cache").join("vc")))
}

/// Where programs are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSearch {
    path_dirs: Vec<PathBuf>,
    cache_bin: Option<PathBuf>,
}

impl ToolSearch {
    /// Searches `path_dirs` in order, then `cache_bin`.
    pub fn new(path_dirs: Vec<PathBuf>, cache_bin: Option<PathBuf>) -> Self {
        ToolSearch {
            path_dirs,
            cache_bin,
        }
    }

    /// `PATH` of this process, then the running program's directory (and
    /// its parent when that is cargo's `deps` or `examples`, where test and
    /// example binaries live), then `<cache>/tools/bin`.
    pub fn from_env() -> Self {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut path_dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            if dir.ends_with("deps") || dir.ends_with("examples") {
                path_dirs.extend(dir.parent().map(Path::to_path_buf));
            }
            path_dirs.push(dir);
        }
        ToolSearch {
            path_dirs,
            cache_bin: cache_dir().map(|c| c.join("tools").join("bin")),
        }
    }

    /// First executable called `name` in the search path.
    pub fn find(&self, name: &str) -> Option<PathBuf> {
        self.path_dirs
            .iter()
            .chain(self.cache_bin.as_ref())
            .map(|dir| dir.join(name))
            .find(|p| is_executable(p))
    }

    /// The configured path when given (it must be executable), else a search.
    pub fn resolve(
        &self,
        name: &'static str,
        configured: Option<&Path>,
    ) -> Result<PathBuf, ToolError> {
        match configured {
            Some(path) if is_executable(path) => Ok(path.to_path_buf()),
            Some(path) => Err(ToolError::BinaryPath {
                name,
                path: path.to_path_buf(),
            }),
            None => self.find(name).ok_or_else(|| ToolError::BinaryNotFound {
                name,
                searched: self.cache_bin.as_ref().map_or_else(
                    || "the tools cache (no cache directory: set VC_CACHE_DIR)".to_owned(),
                    |d| d.display().to_string(),
                ),
            }),
        }
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_comes_before_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir(d).expect("mkdir");
            let p = d.join("tool");
            std::fs::write(&p, "").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(a.join("plain"), "").expect("write");
        let search = ToolSearch::new(vec![a.clone()], Some(b.clone()));
        assert_eq!(search.find("tool"), Some(a.join("tool")));
        let search = ToolSearch::new(vec![dir.path().join("none")], Some(b.clone()));
        assert_eq!(search.find("tool"), Some(b.join("tool")));
        // Not executable: not found.
        let search = ToolSearch::new(vec![a], None);
        assert_eq!(search.find("plain"), None);
    }
}
