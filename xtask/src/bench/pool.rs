//! The warm pool's idle cost, for `cargo xtask bench pod --pool`: [`SLOTS`] slots of the default
//! shape are filled, left idle for [`WINDOW`], and each slot's processes (QEMU and its helpers)
//! are measured: proportional set size at the end, and CPU time over the window.

use std::time::Duration;

use anyhow::{Context as _, Result};
use vc_host::runtime::PoolShape;
use vc_host::Runtime;

use super::procfs::{cpu_ticks, pss_kib, ticks_per_second};
use crate::ctx;

/// How many slots are measured.
const SLOTS: usize = 2;
/// How long the slots idle while their CPU time is measured (a measurement window, not a wait
/// for anything).
const WINDOW: Duration = Duration::from_secs(10);

/// What one idle slot costs.
#[derive(Debug, Clone, Copy)]
pub(super) struct SlotCost {
    /// PSS of its processes at the end of the window, MiB.
    pub pss_mib: f64,
    /// CPU of its processes over the window, percent of one host CPU.
    pub cpu_percent: f64,
}

/// Fills [`SLOTS`] slots and measures them idle (the caller drains the pool).
pub(super) async fn idle_cost(rt: &Runtime) -> Result<Vec<SlotCost>> {
    ctx::step(format!(
        "the pool's idle cost: {SLOTS} slots of the default shape, idle for {} s",
        WINDOW.as_secs()
    ));
    let status = rt.fill_pool(SLOTS, &PoolShape::default()).await?;
    anyhow::ensure!(status.ready() == SLOTS, "the pool did not fill: {status:?}");
    let pids: Vec<Vec<(String, i32)>> = status
        .slots
        .iter()
        .map(|s| {
            s.processes
                .iter()
                .map(|p| (p.name.clone(), p.pid))
                .collect()
        })
        .collect();
    let ticks = |slot: &[(String, i32)]| -> Result<u64> {
        slot.iter().map(|(_, pid)| cpu_ticks(*pid)).sum()
    };
    let before: Vec<u64> = pids.iter().map(|s| ticks(s)).collect::<Result<_>>()?;
    tokio::time::sleep(WINDOW).await;
    let after: Vec<u64> = pids.iter().map(|s| ticks(s)).collect::<Result<_>>()?;
    println!(
        "\nidle pool slots (default shape), after {} s idle:",
        WINDOW.as_secs()
    );
    let mut costs = Vec::new();
    for (i, slot) in pids.iter().enumerate() {
        let mut parts = Vec::new();
        let mut total = 0;
        for (name, pid) in slot {
            let kib = pss_kib(*pid).with_context(|| format!("cannot measure {name} ({pid})"))?;
            total += kib;
            parts.push(format!("{name} {:.1}", kib as f64 / 1024.0));
        }
        let cpu = (after[i] - before[i]) as f64 / ticks_per_second() / WINDOW.as_secs_f64();
        println!(
            "  slot {}: PSS {:.1} MiB ({}), CPU {:.1}% of one core",
            i + 1,
            total as f64 / 1024.0,
            parts.join(", "),
            cpu * 100.0
        );
        costs.push(SlotCost {
            pss_mib: total as f64 / 1024.0,
            cpu_percent: cpu * 100.0,
        });
    }
    Ok(costs)
}
