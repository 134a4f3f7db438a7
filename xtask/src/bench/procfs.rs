//! What the density benchmark reads from `/proc` about host processes: proportional set size
//! (`smaps_rollup`) and CPU time (`stat`).

use anyhow::{bail, Context as _, Result};

/// Proportional set size of process `pid` in KiB, from `/proc/<pid>/smaps_rollup`.
pub(super) fn pss_kib(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_pss(&text).with_context(|| format!("{path} has no Pss line"))
}

fn parse_pss(smaps_rollup: &str) -> Option<u64> {
    let line = smaps_rollup.lines().find(|l| l.starts_with("Pss:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of process `pid` (all its threads) in clock ticks, from
/// `/proc/<pid>/stat`.
pub(super) fn cpu_ticks(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    match parse_ticks(&text) {
        Some(t) => Ok(t),
        None => bail!("cannot parse {path}"),
    }
}

fn parse_ticks(stat: &str) -> Option<u64> {
    // The command name is in parentheses and may hold spaces: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5); `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub(super) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the C library and takes no pointer.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_line() {
        let text = "55d0-7ff [rollup]\nRss:   9000 kB\nPss:   7012 kB\nPss_Anon: 3 kB\n";
        assert_eq!(parse_pss(text), Some(7012));
        assert_eq!(parse_pss("Rss: 1 kB\n"), None);
    }

    #[test]
    fn ticks_after_a_name_with_spaces() {
        let stat = "42 (qemu sys) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_ticks(stat), Some(300));
        assert_eq!(parse_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id() as i32;
        assert!(pss_kib(me).expect("pss") > 0);
        cpu_ticks(me).expect("ticks");
    }
}
