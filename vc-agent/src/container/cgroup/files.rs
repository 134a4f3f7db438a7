//! Parsers for the cgroup2 files read for stats and events: flat keyed files
//! (`cpu.stat`, `memory.events`, `cgroup.events`), single values with `max`, and
//! the nested `io.stat`.

/// The value of `key` in a flat keyed file (`key value` per line).
pub(crate) fn flat_keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next()? == key {
            words.next()?.parse().ok()
        } else {
            None
        }
    })
}

/// A single-value file that may say `max`: `Ok(None)` for `max`, `Err(())` for
/// anything that is neither.
pub(crate) fn max_value(content: &str) -> Result<Option<u64>, ()> {
    match content.trim() {
        "max" => Ok(None),
        v => v.parse().map(Some).map_err(|_| ()),
    }
}

/// A single number.
pub(crate) fn number(content: &str) -> Option<u64> {
    content.trim().parse().ok()
}

/// Bytes read and written, summed over the devices of `io.stat`
/// (`MAJ:MIN rbytes=.. wbytes=.. rios=.. ...` per line).
pub(crate) fn io_bytes(content: &str) -> (u64, u64) {
    let mut read = 0u64;
    let mut written = 0u64;
    for line in content.lines() {
        for field in line.split_whitespace().skip(1) {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else {
                continue;
            };
            match k {
                "rbytes" => read = read.saturating_add(v),
                "wbytes" => written = written.saturating_add(v),
                _ => {}
            }
        }
    }
    (read, written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat() {
        let s = "usage_usec 12345\nuser_usec 10000\nsystem_usec 2345\nnr_periods 0\n\
                 nr_throttled 0\nthrottled_usec 0\n";
        assert_eq!(flat_keyed(s, "usage_usec"), Some(12345));
        assert_eq!(flat_keyed(s, "user_usec"), Some(10000));
        assert_eq!(flat_keyed(s, "system_usec"), Some(2345));
        assert_eq!(flat_keyed(s, "usage"), None);
    }

    #[test]
    fn memory_events() {
        let s = "low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(flat_keyed(s, "oom_kill"), Some(1));
        assert_eq!(flat_keyed(s, "oom"), Some(2));
        assert_eq!(flat_keyed(s, "max"), Some(17));
    }

    #[test]
    fn cgroup_events() {
        assert_eq!(flat_keyed("populated 1\nfrozen 0\n", "frozen"), Some(0));
        assert_eq!(flat_keyed("populated 1\nfrozen 1\n", "frozen"), Some(1));
    }

    #[test]
    fn max_files() {
        assert_eq!(max_value("max\n"), Ok(None));
        assert_eq!(max_value("268435456\n"), Ok(Some(268_435_456)));
        assert_eq!(max_value("lots\n"), Err(()));
        assert_eq!(number(" 42\n"), Some(42));
    }

    #[test]
    fn io_stat_sums_devices() {
        let s = "254:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                 254:16 rbytes=100 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n";
        assert_eq!(io_bytes(s), (4196, 8192));
        assert_eq!(io_bytes(""), (0, 0));
    }
}
