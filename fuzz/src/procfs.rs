//! `procfs`: the text files the host and the agent parse from the kernel,
//! `/proc/<pid>/stat` (the host finds QEMU and its helpers by pid and start
//! time), `/proc/meminfo`, `/proc/cmdline` and `/proc/self/mountinfo` in the
//! guest, the cgroup v2 files behind a container's stats, and the host's
//! mountinfo parser (`vc_host::mountinfo`).
//!
//! The bytes are the file's text. Besides never panicking: a command name
//! (`/proc/<pid>/stat` field 2, which a process sets itself) cannot shift the
//! fields after it, and the agent's kernel command line settings print back
//! to the same settings; a mountinfo line prints back, escaped as the kernel
//! does, to the same mount.

use vc_agent::config::Config;
use vc_agent::fuzzing as agent;
use vc_host::fuzzing as host;

/// `/proc/<pid>/stat` of a sleeping process started at tick 4242 whose
/// command name is `comm`.
fn stat_line(comm: &str) -> String {
    let after: Vec<String> = (4..=52)
        .map(|field| match field {
            22 => "4242".to_owned(),
            f => f.to_string(),
        })
        .collect();
    format!("123 ({comm}) S {}\n", after.join(" "))
}

fn cmdline(config: &Config) -> String {
    let mut words = vec![
        format!("vc.log={}", config.log_level),
        format!("vc.port={}", config.port),
    ];
    if config.debug.requests {
        words.push("vc.debug=requests".to_owned());
    }
    words.join(" ")
}

/// A mountinfo field as the kernel writes it: space, tab, newline and
/// backslash as `\ooo`.
fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// The host's mountinfo parser: what parses prints back, escaped as the
/// kernel does, to the same mounts.
fn mountinfo(text: &str) {
    let Ok(mounts) = vc_host::mountinfo::parse(text) else {
        return;
    };
    let _ = vc_host::mountinfo::under(&mounts, std::path::Path::new("/run")).count();
    for m in &mounts {
        let (Some(root), Some(point), Some(source)) =
            (m.root.to_str(), m.mount_point.to_str(), m.source.to_str())
        else {
            continue;
        };
        let mut fields = vec![
            m.id.to_string(),
            m.parent_id.to_string(),
            format!("{}:{}", m.major, m.minor),
            escape(root),
            escape(point),
            m.mount_options.clone(),
        ];
        fields.extend(m.optional.iter().cloned());
        fields.extend([
            "-".to_owned(),
            m.fs_type.clone(),
            escape(source),
            m.super_options.clone(),
        ]);
        let line = fields.join(" ");
        let back = vc_host::mountinfo::parse(&line)
            .unwrap_or_else(|e| panic!("{line:?} printed from {m:?} is refused: {e}"));
        assert_eq!(back.as_slice(), std::slice::from_ref(m), "{line:?}");
    }
}

pub(crate) fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    mountinfo(text);

    let _ = host::proc_stat(text);
    assert_eq!(
        host::proc_stat(&stat_line(text)),
        Some(('S', 4242)),
        "a command name moved the fields of /proc/<pid>/stat"
    );

    if let Some(bytes) = agent::mem_available(text) {
        assert_eq!(bytes % 1024, 0, "meminfo counts kiB");
    }
    let _ = agent::root_has_parent(text);
    for key in ["usage_usec", "oom_kill", "frozen", "populated"] {
        let _ = agent::cgroup_flat_keyed(text, key);
    }
    let _ = agent::cgroup_max_value(text);
    let _ = agent::cgroup_number(text);
    let _ = agent::cgroup_io_bytes(text);

    let (config, warnings) = Config::from_cmdline(text);
    for w in &warnings {
        assert!(!w.to_string().is_empty());
    }
    let printed = cmdline(&config);
    let (again, warnings) = Config::from_cmdline(&printed);
    assert!(warnings.is_empty(), "{printed:?} warns: {warnings:?}");
    assert_eq!(again, config, "{printed:?} reads back differently");
}
