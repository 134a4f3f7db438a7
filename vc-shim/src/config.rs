//! The shim's settings: `/etc/vc/shim.toml`, or the file `$VC_SHIM_CONFIG`
//! names. Every field has a working default, so a missing default file is
//! not an error (a missing `$VC_SHIM_CONFIG` file is). `VC_ROOT` and
//! `VC_GUEST_IMAGE_DIR` override the file, as they do for `virtc`.
//!
//! ```toml
//! log_level = "info"
//!
//! [runtime]                 # vc_host::config::RuntimeConfig
//! root = "/run/vc"
//! guest_image_dir = "/usr/share/vc/guest-image"
//!
//! [vm]                      # vc_host::hypervisor::VmConfig: every pod's VM
//! vcpus = 1
//! memory_mib = 256
//!
//! [timeouts]
//! boot_secs = 120
//! call_secs = 30
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vc_host::config::RuntimeConfig;
use vc_host::hypervisor::VmConfig;

/// The file read when `$VC_SHIM_CONFIG` is not set.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/vc/shim.toml";

/// The environment variable naming another settings file.
pub const CONFIG_ENV: &str = "VC_SHIM_CONFIG";

/// The largest settings file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Everything the shim can be told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShimConfig {
    /// The shim's log level (`error`, `warn`, `info`, `debug`, `trace`);
    /// containerd's `-debug` raises it to `debug`.
    pub log_level: String,
    /// The vc runtime: state root, guest image, VMM user, host cgroups.
    pub runtime: RuntimeConfig,
    /// Every pod's VM: vcpus, memory, machine, accelerator, program paths.
    pub vm: VmConfig,
    /// Deadlines of the calls the shim makes.
    pub timeouts: Timeouts,
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            log_level: "info".to_owned(),
            runtime: RuntimeConfig::default(),
            vm: VmConfig::default(),
            timeouts: Timeouts::default(),
        }
    }
}

/// How long the shim waits for the runtime. Nothing it calls is unbounded
/// except waiting for a process to exit, which the VM's death also ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Creating and booting a pod's VM (TCG boots take seconds; a loaded
    /// host many more).
    pub boot_secs: u64,
    /// Any other runtime call: create, start, kill, stats, delete...
    pub call_secs: u64,
    /// Stopping a pod: its containers' grace period and the VM's shutdown.
    pub stop_secs: u64,
    /// After a process exits, how long its output may take to drain into
    /// containerd's fifos before the exit is reported anyway.
    pub drain_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            boot_secs: 120,
            call_secs: 30,
            stop_secs: 30,
            drain_secs: 30,
        }
    }
}

impl Timeouts {
    /// [`Timeouts::boot_secs`].
    pub fn boot(&self) -> Duration {
        Duration::from_secs(self.boot_secs)
    }
    /// [`Timeouts::call_secs`].
    pub fn call(&self) -> Duration {
        Duration::from_secs(self.call_secs)
    }
    /// [`Timeouts::stop_secs`].
    pub fn stop(&self) -> Duration {
        Duration::from_secs(self.stop_secs)
    }
    /// [`Timeouts::drain_secs`].
    pub fn drain(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the shim settings {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than any sensible settings file.
    #[error("the shim settings {} are larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid settings.
    #[error("the shim settings {} are invalid", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        #[source]
        source: toml::de::Error,
    },
    /// A timeout is zero.
    #[error("timeouts.{0} must be at least 1 second")]
    ZeroTimeout(&'static str),
}

/// What the environment says, read once (tests pass their own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `$VC_SHIM_CONFIG`.
    pub config: Option<PathBuf>,
    /// `$VC_ROOT`.
    pub root: Option<PathBuf>,
    /// `$VC_GUEST_IMAGE_DIR`.
    pub guest_image_dir: Option<PathBuf>,
}

impl Env {
    /// This process's environment (empty values count as unset).
    pub fn from_process() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            config: var(CONFIG_ENV),
            root: var("VC_ROOT"),
            guest_image_dir: var("VC_GUEST_IMAGE_DIR"),
        }
    }
}

impl ShimConfig {
    /// Loads the settings: the file `env` names, else the default file when
    /// it exists, else the defaults; then the environment's overrides.
    pub fn load(env: &Env) -> Result<Self, ConfigError> {
        let mut config = match &env.config {
            Some(path) => Self::read(path)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::read(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => ShimConfig::default(),
        };
        if let Some(root) = &env.root {
            config.runtime.root = root.clone();
        }
        if let Some(dir) = &env.guest_image_dir {
            config.runtime.guest_image_dir = dir.clone();
        }
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses one file (size-capped).
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        use std::io::Read;
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses settings text.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.timeouts;
        for (name, v) in [
            ("boot_secs", t.boot_secs),
            ("call_secs", t.call_secs),
            ("stop_secs", t.stop_secs),
            ("drain_secs", t.drain_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = ShimConfig::parse("").expect("parses");
        assert_eq!(c.vm.vcpus, VmConfig::default().vcpus);
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.log_level, "info");
    }

    #[test]
    fn fields_are_read() {
        let c = ShimConfig::parse(
            r#"
log_level = "debug"
[runtime]
root = "/tmp/vc-root"
guest_image_dir = "/srv/image"
[vm]
vcpus = 2
memory_mib = 512
[timeouts]
boot_secs = 300
"#,
        )
        .expect("parses");
        assert_eq!(c.log_level, "debug");
        assert_eq!(c.runtime.root, PathBuf::from("/tmp/vc-root"));
        assert_eq!(c.runtime.guest_image_dir, PathBuf::from("/srv/image"));
        assert_eq!((c.vm.vcpus, c.vm.memory_mib), (2, 512));
        assert_eq!(c.timeouts.boot_secs, 300);
        assert_eq!(c.timeouts.call_secs, Timeouts::default().call_secs);
    }

    #[test]
    fn unknown_fields_are_refused() {
        for text in [
            "vcpus = 2",
            "[vm]\nvcpu = 2",
            "[timeouts]\nboot = 1",
            "[runtime]\nstate = \"/x\"",
        ] {
            let e = ShimConfig::parse(text).expect_err(text);
            assert!(e.to_string().contains("unknown field"), "{text}: {e}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shim.toml");
        std::fs::write(
            &path,
            "[runtime]\nroot = \"/from/file\"\nguest_image_dir = \"/img/file\"\n",
        )
        .expect("write");
        let env = Env {
            config: Some(path.clone()),
            root: Some("/from/env".into()),
            guest_image_dir: None,
        };
        let c = ShimConfig::load(&env).expect("loads");
        assert_eq!(c.runtime.root, PathBuf::from("/from/env"));
        assert_eq!(c.runtime.guest_image_dir, PathBuf::from("/img/file"));
    }

    #[test]
    fn a_named_file_must_exist_and_timeouts_be_positive() {
        let env = Env {
            config: Some("/nonexistent/vc/shim.toml".into()),
            ..Env::default()
        };
        assert!(matches!(
            ShimConfig::load(&env),
            Err(ConfigError::Read { .. })
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shim.toml");
        std::fs::write(&path, "[timeouts]\ncall_secs = 0\n").expect("write");
        let env = Env {
            config: Some(path),
            ..Env::default()
        };
        assert!(matches!(
            ShimConfig::load(&env),
            Err(ConfigError::ZeroTimeout("call_secs"))
        ));
    }
}
