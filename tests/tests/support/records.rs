//! The state store read directly, as another process would: every pod's
//! `config.json` and `state.json` must parse as the library's own types
//! (`deny_unknown_fields` where they have it), whatever runs meanwhile.

use std::path::Path;

use anyhow::{Context as _, Result};
use vc_host::config::PodConfig;
use vc_host::runtime::record::PodRecord;

/// Reads and parses the records of every pod under `root` that has a
/// configuration (a directory without one is a create or delete in
/// progress). Returns how many pods were read.
pub fn check_records(root: &Path) -> Result<usize> {
    let pods = root.join("pods");
    let mut read = 0;
    for entry in
        std::fs::read_dir(&pods).with_context(|| format!("cannot list {}", pods.display()))?
    {
        let dir = entry?.path();
        let config = dir.join("config.json");
        let _: PodConfig = match vc_host::store::read_json(&config) {
            Ok(c) => c,
            // Deleted (or half-made) between the listing and the read.
            Err(_) if !config.exists() => continue,
            Err(e) => return Err(e).with_context(|| format!("{} is torn", config.display())),
        };
        let state = dir.join("state.json");
        let _: PodRecord = match vc_host::store::read_json(&state) {
            Ok(r) => r,
            Err(_) if !dir.join("config.json").exists() => continue,
            Err(e) => return Err(e).with_context(|| format!("{} is torn", state.display())),
        };
        read += 1;
    }
    Ok(read)
}
