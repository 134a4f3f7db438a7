//! The agent's settings from the kernel command line: the `vc.*` keys.
//!
//! | key | value | default |
//! | --- | --- | --- |
//! | `vc.log` | `trace`, `debug`, `info`, `warn`, `error` or `off` | `info` |
//! | `vc.port` | vsock port to serve on | [`vc_proto::AGENT_VSOCK_PORT`] |
//! | `vc.debug` | comma-separated flags: `requests` | none |
//!
//! Parsing never fails: an unknown key, flag or a bad value is kept as a
//! [`ConfigWarning`] (the default is used) so that a typo on the command line is
//! reported in the log instead of ending the VM.

use std::fmt;

use tracing::level_filters::LevelFilter;

/// Debug switches from `vc.debug`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DebugFlags {
    /// `requests`: log every request and its outcome at `info` instead of `debug`.
    pub requests: bool,
}

/// The agent's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Log level (`vc.log`).
    pub log_level: LevelFilter,
    /// vsock port the agent listens on (`vc.port`).
    pub port: u32,
    /// Debug switches (`vc.debug`).
    pub debug: DebugFlags,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            log_level: LevelFilter::INFO,
            port: vc_proto::AGENT_VSOCK_PORT,
            debug: DebugFlags::default(),
        }
    }
}

/// Something on the command line that was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A `vc.*` key this agent does not know.
    UnknownKey(String),
    /// A known key with a value that does not parse; the default is used.
    BadValue {
        /// The key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A `vc.debug` flag this agent does not know.
    UnknownDebugFlag(String),
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKey(key) => write!(f, "unknown kernel command line key `{key}` ignored"),
            Self::BadValue {
                key,
                value,
                expected,
            } => write!(
                f,
                "kernel command line `{key}={value}` ignored: expected {expected}; using the default"
            ),
            Self::UnknownDebugFlag(flag) => {
                write!(f, "unknown `vc.debug` flag `{flag}` ignored (known: requests)")
            }
        }
    }
}

impl Config {
    /// Parses the text of `/proc/cmdline`. Keys without the `vc.` prefix belong to
    /// the kernel and are skipped.
    pub fn from_cmdline(cmdline: &str) -> (Self, Vec<ConfigWarning>) {
        let mut config = Self::default();
        let mut warnings = Vec::new();
        for word in cmdline.split_ascii_whitespace() {
            let Some(setting) = word.strip_prefix("vc.") else {
                continue;
            };
            let (key, value) = setting.split_once('=').unwrap_or((setting, ""));
            match key {
                "log" => match parse_level(value) {
                    Some(level) => config.log_level = level,
                    None => warnings.push(ConfigWarning::BadValue {
                        key: "vc.log",
                        value: value.to_owned(),
                        expected: "one of trace, debug, info, warn, error, off",
                    }),
                },
                "port" => match value.parse::<u32>() {
                    Ok(port) if port != 0 && port != u32::MAX => config.port = port,
                    _ => warnings.push(ConfigWarning::BadValue {
                        key: "vc.port",
                        value: value.to_owned(),
                        expected: "a vsock port number",
                    }),
                },
                "debug" => {
                    for flag in value.split(',').filter(|f| !f.is_empty()) {
                        match flag {
                            "requests" => config.debug.requests = true,
                            other => warnings.push(ConfigWarning::UnknownDebugFlag(other.into())),
                        }
                    }
                }
                _ => warnings.push(ConfigWarning::UnknownKey(format!("vc.{key}"))),
            }
        }
        (config, warnings)
    }
}

/// Parses a level name as `vc.log` and `--log` take it.
pub fn parse_level(value: &str) -> Option<LevelFilter> {
    Some(match value.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warn" | "warning" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_vc_keys() {
        let (config, warnings) = Config::from_cmdline("console=ttyS0 panic=-1 quiet\n");
        assert_eq!(config, Config::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn all_keys() {
        let (config, warnings) =
            Config::from_cmdline("console=ttyS0 vc.log=debug vc.port=2000 vc.debug=requests");
        assert_eq!(config.log_level, LevelFilter::DEBUG);
        assert_eq!(config.port, 2000);
        assert!(config.debug.requests);
        assert!(warnings.is_empty());
    }

    #[test]
    fn bad_values_and_unknown_keys_warn_and_keep_defaults() {
        let (config, warnings) =
            Config::from_cmdline("vc.log=loud vc.port=x vc.colour=blue vc.debug=requests,frobs");
        assert_eq!(config.log_level, LevelFilter::INFO);
        assert_eq!(config.port, vc_proto::AGENT_VSOCK_PORT);
        assert!(config.debug.requests);
        assert_eq!(warnings.len(), 4);
        assert_eq!(
            warnings[2].to_string(),
            "unknown kernel command line key `vc.colour` ignored"
        );
        assert!(warnings[0].to_string().contains("vc.log=loud"));
        assert!(warnings[3].to_string().contains("frobs"));
    }
}
