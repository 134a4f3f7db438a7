//! Why a bundle or an OCI spec is refused. Every refusal names the spec's
//! field as a JSON path (`linux.resources.devices[2]`, `mounts[3].type`).

use std::path::PathBuf;

use thiserror::Error;

/// A bundle that cannot be read, or a spec vc cannot honour.
#[derive(Debug, Error)]
pub enum OciError {
    /// `config.json` cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is larger than [`MAX_SPEC_BYTES`](super::MAX_SPEC_BYTES).
    #[error("{} is larger than {max} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// `config.json` is not JSON, or not an OCI runtime spec.
    #[error("{} is not an OCI runtime spec", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A field vc does not implement, or a value of it vc cannot honour.
    #[error("{field} is not supported: {reason}")]
    Unsupported {
        /// The field, as a JSON path in the spec.
        field: String,
        /// Why.
        reason: String,
    },
    /// A field whose value is wrong whatever the runtime.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field, as a JSON path in the spec.
        field: String,
        /// Why.
        reason: String,
    },
    /// A field vc needs is absent.
    #[error("{field} is missing")]
    Missing {
        /// The field, as a JSON path in the spec.
        field: String,
    },
}

impl OciError {
    /// The spec field the error names, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            OciError::Unsupported { field, .. }
            | OciError::Invalid { field, .. }
            | OciError::Missing { field } => Some(field),
            OciError::Read { .. } | OciError::TooLarge { .. } | OciError::Parse { .. } => None,
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        OciError::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        OciError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(field: impl Into<String>) -> Self {
        OciError::Missing {
            field: field.into(),
        }
    }
}
