//! A container's statistics as containerd's cgroup v2 metrics
//! (`io.containerd.cgroups.v2.Metrics`, the message `ctr task metrics` and
//! the CRI plugin decode). vc's containers live in cgroup v2 in the guest;
//! the agent reads `cpu.stat`, `memory.current`/`memory.max`,
//! `pids.current`/`pids.max` and `io.stat`, and this maps them field by field.

use containerd_shim::protos::cgroups_v2::metrics::{
    CPUStat, IOEntry, IOStat, MemoryStat, Metrics, PidsStat,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use vc_proto::ContainerStats;

/// The type URL containerd registers the cgroup v2 metrics under.
pub const METRICS_V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// What cgroup v2 reports for an unlimited `memory.max` (containerd's
/// cgroups library maps `max` to the largest u64).
const UNLIMITED: u64 = u64::MAX;

/// vc's statistics as cgroup v2 metrics.
pub fn metrics(stats: &ContainerStats) -> Metrics {
    let mut m = Metrics::new();
    let mut pids = PidsStat::new();
    pids.current = stats.pids;
    // containerd's library reports an unlimited pids.max as 0.
    pids.limit = stats.pids_limit.unwrap_or(0);
    m.pids = Some(pids).into();
    let mut cpu = CPUStat::new();
    cpu.usage_usec = stats.cpu_usage_us;
    cpu.user_usec = stats.cpu_user_us;
    cpu.system_usec = stats.cpu_system_us;
    m.cpu = Some(cpu).into();
    let mut memory = MemoryStat::new();
    memory.usage = stats.memory_usage_bytes;
    memory.usage_limit = stats.memory_limit_bytes.unwrap_or(UNLIMITED);
    m.memory = Some(memory).into();
    let mut entry = IOEntry::new();
    entry.rbytes = stats.blkio_read_bytes;
    entry.wbytes = stats.blkio_write_bytes;
    let mut io = IOStat::new();
    io.usage.push(entry);
    m.io = Some(io).into();
    m
}

/// The metrics packed for `StatsResponse.stats`.
pub fn metrics_any(
    stats: &ContainerStats,
) -> Result<Any, containerd_shim::protos::protobuf::Error> {
    let mut any = Any::new();
    any.type_url = METRICS_V2_TYPE_URL.to_owned();
    any.value = metrics(stats).write_to_bytes()?;
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ContainerStats {
        ContainerStats {
            cpu_usage_us: 1_500_000,
            cpu_user_us: 1_000_000,
            cpu_system_us: 500_000,
            memory_usage_bytes: 4 << 20,
            memory_limit_bytes: Some(64 << 20),
            pids: 3,
            pids_limit: Some(100),
            blkio_read_bytes: 4096,
            blkio_write_bytes: 8192,
        }
    }

    #[test]
    fn every_field_maps_and_round_trips() {
        let any = metrics_any(&sample()).expect("encodes");
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let m = Metrics::parse_from_bytes(&any.value).expect("decodes");
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!((m.memory.usage, m.memory.usage_limit), (4 << 20, 64 << 20));
        assert_eq!(m.io.usage.len(), 1);
        assert_eq!((m.io.usage[0].rbytes, m.io.usage[0].wbytes), (4096, 8192));
    }

    #[test]
    fn unlimited_limits_read_as_containerd_reads_them() {
        let mut s = sample();
        s.memory_limit_bytes = None;
        s.pids_limit = None;
        let m = metrics(&s);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.pids.limit, 0);
    }

    #[test]
    fn wire_format_uses_containerds_field_numbers() {
        // Metrics.pids (1) { current (1) = 3 } alone: 0a 02 08 03. The
        // numbers are those of containerd's cgroup2 metrics.proto, which
        // Go's decoder in containerd 1.6 reads.
        let s = ContainerStats {
            pids: 3,
            pids_limit: Some(0),
            memory_limit_bytes: Some(0),
            ..ContainerStats::default()
        };
        let mut m = metrics(&s);
        m.cpu = None.into();
        m.memory = None.into();
        m.io = None.into();
        assert_eq!(
            m.write_to_bytes().expect("encodes"),
            [0x0a, 0x02, 0x08, 0x03]
        );
        // MemoryStat.usage is field 32, usage_limit 33 (varint keys 0x80 0x02, 0x88 0x02).
        let mut mem = MemoryStat::new();
        mem.usage = 1;
        mem.usage_limit = 2;
        assert_eq!(
            mem.write_to_bytes().expect("encodes"),
            [0x80, 0x02, 0x01, 0x88, 0x02, 0x02]
        );
    }
}
