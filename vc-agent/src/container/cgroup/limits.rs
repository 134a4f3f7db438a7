//! From [`Resources`] to the values written to `memory.max`, `cpu.max`,
//! `cpu.weight` and `pids.max`: checked against the ranges the kernel accepts,
//! then written through cgroups-rs' controllers.
//!
//! `None` leaves a limit as it is (unset at creation, unchanged on update);
//! `u64::MAX` lifts it (`max`) for memory, CPU quota and pids.

use std::path::Path;

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::{Cgroup, MaxValue};
use vc_proto::Resources;

use crate::container::error::{CgroupsRsError, ContainerError};

/// Smallest CPU period and quota the kernel takes (1 ms).
const CPU_MIN_US: u64 = 1_000;
/// Largest CPU period the kernel takes (1 s).
const CPU_MAX_PERIOD_US: u64 = 1_000_000;
/// `pids.max` must be below `PID_MAX_LIMIT + 1`.
const PIDS_MAX: u64 = 4 * 1024 * 1024;

/// Checked limits, in the units cgroups-rs takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// `memory.max`; `-1` is `max`.
    pub memory_max: Option<i64>,
    /// `cpu.max` quota; `-1` is `max`.
    pub cpu_quota: Option<i64>,
    /// `cpu.max` period.
    pub cpu_period: Option<u64>,
    /// `cpu.weight`.
    pub cpu_weight: Option<u64>,
    /// `pids.max`.
    pub pids_max: Option<MaxValue>,
}

fn out_of_range(field: &'static str, value: u64, range: &'static str) -> ContainerError {
    ContainerError::InvalidResource {
        field,
        value,
        range,
    }
}

impl Limits {
    /// Checks `r` and converts it.
    pub(crate) fn from_resources(r: &Resources) -> Result<Self, ContainerError> {
        let memory_max = match r.memory_limit_bytes {
            None => None,
            Some(u64::MAX) => Some(-1),
            Some(v) => match i64::try_from(v) {
                Ok(b) if b >= 4096 => Some(b),
                _ => {
                    return Err(out_of_range(
                        "memory_limit_bytes",
                        v,
                        "4096 to 2^63-1, or u64::MAX for no limit",
                    ))
                }
            },
        };
        let cpu_quota = match r.cpu_quota_us {
            None => None,
            Some(u64::MAX) => Some(-1),
            Some(v) if (CPU_MIN_US..=i64::MAX as u64).contains(&v) => Some(v as i64),
            Some(v) => {
                return Err(out_of_range(
                    "cpu_quota_us",
                    v,
                    "1000 to 2^63-1, or u64::MAX for no limit",
                ))
            }
        };
        let cpu_period = match r.cpu_period_us {
            None => None,
            Some(v) if (CPU_MIN_US..=CPU_MAX_PERIOD_US).contains(&v) => Some(v),
            Some(v) => return Err(out_of_range("cpu_period_us", v, "1000 to 1000000")),
        };
        let cpu_weight = match r.cpu_weight {
            None => None,
            Some(v) if (1..=10_000).contains(&v) => Some(v),
            Some(v) => return Err(out_of_range("cpu_weight", v, "1 to 10000")),
        };
        let pids_max = match r.pids_limit {
            None => None,
            Some(u64::MAX) => Some(MaxValue::Max),
            Some(v) if (1..=PIDS_MAX).contains(&v) => Some(MaxValue::Value(v as i64)),
            Some(v) => {
                return Err(out_of_range(
                    "pids_limit",
                    v,
                    "1 to 4194304, or u64::MAX for no limit",
                ))
            }
        };
        Ok(Self {
            memory_max,
            cpu_quota,
            cpu_period,
            cpu_weight,
            pids_max,
        })
    }

    /// The controllers these limits need.
    pub(crate) fn controllers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory_max.is_some() {
            out.push("memory");
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_weight.is_some() {
            out.push("cpu");
        }
        if self.pids_max.is_some() {
            out.push("pids");
        }
        out
    }

    /// Writes the limits that are set into `cgroup` (at `dir`).
    pub(crate) fn apply(&self, cgroup: &Cgroup, dir: &Path) -> Result<(), ContainerError> {
        let failed = |source| ContainerError::Cgroup {
            action: "set limits of",
            path: dir.to_path_buf(),
            source: CgroupsRsError(source),
        };
        let unavailable =
            |name: &'static str| ContainerError::ControllerUnavailable(name, dir.to_path_buf());
        if let Some(max) = self.memory_max {
            let mem: &MemController = cgroup
                .controller_of()
                .ok_or_else(|| unavailable("memory"))?;
            mem.set_limit(max).map_err(failed)?;
        }
        if self.cpu_quota.is_some() || self.cpu_period.is_some() || self.cpu_weight.is_some() {
            let cpu: &CpuController = cgroup.controller_of().ok_or_else(|| unavailable("cpu"))?;
            if self.cpu_quota.is_some() || self.cpu_period.is_some() {
                cpu.set_cfs_quota_and_period(self.cpu_quota, self.cpu_period)
                    .map_err(failed)?;
            }
            if let Some(weight) = self.cpu_weight {
                // In cgroup v2 mode `set_shares` writes `cpu.weight` as given.
                cpu.set_shares(weight).map_err(failed)?;
            }
        }
        if let Some(max) = self.pids_max {
            let pids: &PidController = cgroup.controller_of().ok_or_else(|| unavailable("pids"))?;
            pids.set_pid_max(max).map_err(failed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_nothing() {
        let l = Limits::from_resources(&Resources::default()).expect("valid");
        assert_eq!(l, Limits::default());
        assert!(l.controllers().is_empty());
    }

    #[test]
    fn values_convert() {
        let l = Limits::from_resources(&Resources {
            memory_limit_bytes: Some(256 << 20),
            cpu_quota_us: Some(50_000),
            cpu_period_us: Some(100_000),
            cpu_weight: Some(200),
            pids_limit: Some(64),
        })
        .expect("valid");
        assert_eq!(l.memory_max, Some(256 << 20));
        assert_eq!(l.cpu_quota, Some(50_000));
        assert_eq!(l.cpu_period, Some(100_000));
        assert_eq!(l.cpu_weight, Some(200));
        assert_eq!(l.pids_max, Some(MaxValue::Value(64)));
        assert_eq!(l.controllers(), vec!["memory", "cpu", "pids"]);
    }

    #[test]
    fn u64_max_lifts_a_limit() {
        let l = Limits::from_resources(&Resources {
            memory_limit_bytes: Some(u64::MAX),
            cpu_quota_us: Some(u64::MAX),
            pids_limit: Some(u64::MAX),
            ..Resources::default()
        })
        .expect("valid");
        assert_eq!(l.memory_max, Some(-1));
        assert_eq!(l.cpu_quota, Some(-1));
        assert_eq!(l.pids_max, Some(MaxValue::Max));
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let cases = [
            Resources {
                memory_limit_bytes: Some(0),
                ..Resources::default()
            },
            Resources {
                cpu_quota_us: Some(999),
                ..Resources::default()
            },
            Resources {
                cpu_period_us: Some(2_000_000),
                ..Resources::default()
            },
            Resources {
                cpu_weight: Some(0),
                ..Resources::default()
            },
            Resources {
                cpu_weight: Some(10_001),
                ..Resources::default()
            },
            Resources {
                pids_limit: Some(0),
                ..Resources::default()
            },
        ];
        for r in cases {
            let err = Limits::from_resources(&r).expect_err("out of range");
            assert!(
                matches!(err, ContainerError::InvalidResource { .. }),
                "{err}"
            );
        }
        let err = Limits::from_resources(&Resources {
            cpu_weight: Some(0),
            ..Resources::default()
        })
        .expect_err("out of range");
        assert_eq!(
            err.to_string(),
            "the resource limit cpu_weight = 0 is out of range (1 to 10000)"
        );
    }
}
