//! `virtc pool ...`

use vc_host::runtime::{PoolShape, PoolStatus};
use vc_host::Runtime;

use crate::cli::PoolCommand;
use crate::print::Printer;

pub async fn run(rt: &Runtime, out: &Printer, cmd: PoolCommand) -> anyhow::Result<()> {
    match cmd {
        PoolCommand::Fill {
            count,
            vcpus,
            memory_mib,
            machine,
        } => {
            let shape = PoolShape {
                vcpus,
                memory_mib,
                machine,
            };
            print_status(out, &rt.fill_pool(count, &shape).await?)
        }
        PoolCommand::Status => print_status(out, &rt.pool_status().await?),
        PoolCommand::Drain => {
            let removed = rt.drain_pool().await?;
            if out.json {
                out.json(&serde_json::json!({ "removed": removed }))
            } else {
                println!("removed {removed} slot(s)");
                Ok(())
            }
        }
    }
}

fn print_status(out: &Printer, status: &PoolStatus) -> anyhow::Result<()> {
    if out.json {
        return out.json(status);
    }
    println!(
        "{:<34} {:<6} {:>6} {:>7} {:<8} {:>7} {:>6} {:>8}",
        "SLOT", "HEALTH", "VCPUS", "MEM-MIB", "MACHINE", "AGE-S", "BOOT-S", "QEMU"
    );
    for s in &status.slots {
        let vm = s.shape.vm_config();
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        println!(
            "{:<34} {:<6} {:>6} {:>7} {:<8} {:>7} {:>6} {:>8}",
            s.name,
            serde_json::to_value(s.health)?.as_str().unwrap_or("?"),
            vm.vcpus,
            vm.memory_mib,
            vm.machine.qemu_name(),
            s.age_secs,
            dash(s.boot_secs.map(|b| b.to_string())),
            dash(s.vmm_pid().map(|p| p.to_string())),
        );
    }
    Ok(())
}
