//! Reading `config.json` (size-capped, unknown fields refused) and the
//! spec's top-level fields: `ociVersion`, `root`, `hostname`, `domainname`,
//! `hooks` and the other platforms' sections.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::Value;

use super::OciError;

/// The largest `config.json` read. containerd's specs are a few KiB, 30 KiB
/// with a seccomp profile.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;

/// Reads and parses `<bundle>/config.json`. A field the typed spec does not
/// know (a newer spec version, a typo) is refused unless its value is empty
/// (`null`, `false`, `0`, `""`, `[]`, `{}`), which means nothing.
pub fn load_spec(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let read = |source| OciError::Read {
        path: path.clone(),
        source,
    };
    let file = std::fs::File::open(&path).map_err(read)?;
    let mut text = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        return Err(OciError::TooLarge {
            path,
            max: MAX_SPEC_BYTES,
        });
    }
    parse_spec(&text).map_err(|e| match e {
        ParseError::Json(source) => OciError::Parse { path, source },
        ParseError::Unknown(field) => OciError::unsupported(
            field,
            "the field is unknown to vc's OCI runtime spec (oci-spec 0.10, runtime-spec 1.2)",
        ),
    })
}

pub(super) enum ParseError {
    Json(serde_json::Error),
    Unknown(String),
}

/// Parses spec text, refusing fields the typed spec drops.
pub(super) fn parse_spec(text: &[u8]) -> Result<Spec, ParseError> {
    let raw: Value = serde_json::from_slice(text).map_err(ParseError::Json)?;
    let spec: Spec = serde_json::from_value(raw.clone()).map_err(ParseError::Json)?;
    let kept = serde_json::to_value(&spec).map_err(ParseError::Json)?;
    match unknown_field(&raw, &kept, "") {
        Some(field) => Err(ParseError::Unknown(field)),
        None => Ok(spec),
    }
}

/// The first field of `raw` with a non-empty value that `kept` lacks.
fn unknown_field(raw: &Value, kept: &Value, path: &str) -> Option<String> {
    match (raw, kept) {
        (Value::Object(r), Value::Object(k)) => r.iter().find_map(|(name, value)| {
            let field = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match k.get(name) {
                Some(kept) => unknown_field(value, kept, &field),
                None if is_empty(value) => None,
                None => Some(field),
            }
        }),
        (Value::Array(r), Value::Array(k)) if r.len() == k.len() => r
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (r, k))| unknown_field(r, k, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Refuses what vc has no way to honour at the top level: another major
/// version, hooks (host programs run in the container's namespaces, which
/// are inside the VM), a domain name, and the other platforms' sections.
pub(super) fn check_top_level(spec: &Spec) -> Result<(), OciError> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(OciError::unsupported(
            "ociVersion",
            format!("{version:?}: vc reads runtime-spec 1.x"),
        ));
    }
    if let Some(hooks) = spec.hooks() {
        // `prestart` is deprecated in the spec, and refused like the others.
        #[allow(deprecated)]
        let any = [
            hooks.prestart(),
            hooks.create_runtime(),
            hooks.create_container(),
            hooks.start_container(),
            hooks.poststart(),
            hooks.poststop(),
        ]
        .iter()
        .any(|h| h.as_ref().is_some_and(|h| !h.is_empty()));
        if any {
            return Err(OciError::unsupported(
                "hooks",
                "hooks run host programs in the container's namespaces, which are inside the VM",
            ));
        }
    }
    if spec.domainname().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(OciError::unsupported(
            "domainname",
            "the agent sets the hostname only",
        ));
    }
    for (field, present) in [
        ("solaris", spec.solaris().is_some()),
        ("windows", spec.windows().is_some()),
        ("vm", spec.vm().is_some()),
        ("zos", spec.zos().is_some()),
    ] {
        if present {
            return Err(OciError::unsupported(
                field,
                "vc runs Linux containers in its own VM",
            ));
        }
    }
    Ok(())
}

/// `root.path` (relative to the bundle, or absolute) and `root.readonly`.
pub(super) fn root(spec: &Spec, bundle: &Path) -> Result<(PathBuf, bool), OciError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| OciError::missing("root"))?;
    let path = root.path();
    if path.as_os_str().is_empty() {
        return Err(OciError::missing("root.path"));
    }
    Ok((bundle.join(path), root.readonly().unwrap_or(false)))
}

/// `hostname`: empty means none.
pub(super) fn hostname(spec: &Spec) -> Result<Option<String>, OciError> {
    match spec.hostname().as_deref() {
        None | Some("") => Ok(None),
        Some(h) => {
            crate::config::validate_hostname(h)
                .map_err(|_| OciError::invalid("hostname", format!("{h:?} is not a hostname")))?;
            Ok(Some(h.to_owned()))
        }
    }
}
