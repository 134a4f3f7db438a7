//! `GuestDetails` and `Health`: what the guest is and how it is doing.

use std::sync::Arc;

use nix::sys::sysinfo::sysinfo;
use nix::time::{clock_gettime, ClockId};
use vc_proto::{AgentError, ErrorCode, GuestDetails, Health, Response};

use super::errors::fail;
use super::Agent;

fn system(what: &str, error: impl std::fmt::Display) -> AgentError {
    fail(ErrorCode::System, format!("cannot read {what}: {error}"))
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

/// `None` when the line is missing or its value is not a number of kiB that
/// fits in `u64` bytes.
pub(crate) fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl Agent {
    pub(super) fn guest_details(
        self: &Arc<Self>,
        protocol_version: u16,
    ) -> Result<Response, AgentError> {
        let uname = nix::sys::utsname::uname().map_err(|e| system("uname", e))?;
        let boot = clock_gettime(ClockId::CLOCK_BOOTTIME).map_err(|e| system("the clock", e))?;
        let uptime_ms = boot.tv_sec() as u64 * 1000 + boot.tv_nsec() as u64 / 1_000_000;
        let info = sysinfo().map_err(|e| system("sysinfo", e))?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Ok(Response::GuestDetails(GuestDetails {
            agent_version: crate::VERSION.to_owned(),
            protocol_version,
            kernel_release: uname.release().to_string_lossy().into_owned(),
            modules_loaded: self.modules.loaded(),
            uptime_ms,
            cpus,
            memory_bytes: info.ram_total(),
        }))
    }

    pub(super) fn health(self: &Arc<Self>) -> Result<Response, AgentError> {
        let info = sysinfo().map_err(|e| system("sysinfo", e))?;
        let (load_1m, _, _) = info.load_average();
        Ok(Response::Health(Health {
            containers: self.containers.count() as u32,
            memory_available_bytes: mem_available().unwrap_or(info.ram_unused()),
            load_1m_centi: (load_1m * 100.0).round() as u32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:    512 kB\n";
        assert_eq!(parse_mem_available(text), Some(512 * 1024));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn meminfo_too_large_is_none_not_an_overflow() {
        // Found by the `procfs` fuzz target: the multiplication overflowed.
        let text = "MemTo,  \nMemAvailable:   3333392662673464448";
        assert_eq!(parse_mem_available(text), None);
        let max = format!("MemAvailable: {} kB\n", u64::MAX / 1024);
        assert_eq!(parse_mem_available(&max), Some(u64::MAX / 1024 * 1024));
    }
}
