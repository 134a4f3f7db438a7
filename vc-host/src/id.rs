//! Validated identifiers of pods and containers.
//!
//! An id is 1 to 64 characters from `[A-Za-z0-9_.-]`, not `.` or `..` and not
//! starting with `-` (so it is always a safe single path component and never
//! looks like a command-line option). Ids are checked when they enter the
//! library, before anything is created.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Longest accepted id.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} id is empty")]
    Empty {
        /// `pod` or `container`.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} id {id:?} is {len} characters long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// `pod` or `container`.
        kind: &'static str,
        /// The offending id (truncated for display).
        id: String,
        /// Its length.
        len: usize,
    },
    /// The id holds a character outside `[A-Za-z0-9_.-]`, is `.`/`..`, or starts with `-`.
    #[error("{kind} id {id:?} is invalid: use letters, digits, '_', '.' and '-' (not first), and not '.' or '..'")]
    Invalid {
        /// `pod` or `container`.
        kind: &'static str,
        /// The offending id.
        id: String,
    },
}

fn validate(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            id: id.chars().take(MAX_ID_LEN).collect::<String>() + "...",
            len: id.len(),
        });
    }
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok_chars || id == "." || id == ".." || id.starts_with('-') {
        return Err(IdError::Invalid {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `id`.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                validate($kind, &id)?;
                Ok(Self(id))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// The id of a pod, unique on the host.
    PodId,
    "pod"
);
id_type!(
    /// The id of a container, unique in its pod.
    ContainerId,
    "container"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for id in ["a", "pod-1", "A_b.c-9", &"x".repeat(64)] {
            assert!(PodId::new(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert!(matches!(PodId::new(""), Err(IdError::Empty { .. })));
        assert!(matches!(
            PodId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        for id in ["a/b", "..", ".", "-rf", "a b", "é", "a\0b", "a:b"] {
            assert!(
                matches!(ContainerId::new(id), Err(IdError::Invalid { .. })),
                "{id}"
            );
        }
    }

    #[test]
    fn serde_validates() {
        let ok: PodId = serde_json::from_str("\"p1\"").expect("valid id");
        assert_eq!(ok.as_str(), "p1");
        assert!(serde_json::from_str::<PodId>("\"../etc\"").is_err());
    }

    #[test]
    fn message_names_the_kind() {
        let err = ContainerId::new("a/b").expect_err("invalid");
        assert!(err.to_string().starts_with("container id \"a/b\""), "{err}");
    }
}
