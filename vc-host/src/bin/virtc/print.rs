//! Output of virtc: human-readable tables, or JSON with `--json`.

use serde::Serialize;
use vc_host::runtime::{ContainerStatus, PodStatus};

/// Where results go.
#[derive(Debug)]
pub struct Printer {
    pub json: bool,
}

impl Printer {
    pub fn json<T: Serialize>(&self, value: &T) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    pub fn pods(&self, pods: &[PodStatus]) -> anyhow::Result<()> {
        if self.json {
            return self.json(&pods);
        }
        println!(
            "{:<24} {:<8} {:>10} {:>8}",
            "POD", "STATE", "CONTAINERS", "QEMU"
        );
        for p in pods {
            let qemu = p
                .processes
                .iter()
                .find(|proc| proc.name == "qemu")
                .map(|proc| proc.pid.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<24} {:<8} {:>10} {:>8}",
                p.id,
                p.state,
                p.containers.len(),
                qemu
            );
        }
        Ok(())
    }

    pub fn pod(&self, pod: &PodStatus) -> anyhow::Result<()> {
        if self.json {
            return self.json(pod);
        }
        println!("pod {}: {}", pod.id, pod.state);
        for proc in &pod.processes {
            println!("  process {:<20} pid {}", proc.name, proc.pid);
        }
        if let Some(console) = &pod.console_log {
            println!("  console {}", console.display());
        }
        for c in &pod.containers {
            self.container_line(c);
        }
        Ok(())
    }

    fn container_line(&self, c: &ContainerStatus) {
        let pid = c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        let code = c
            .exit_code
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        println!(
            "  container {:<20} {:<8} pid {:<6} exit {:<4} {}",
            c.id,
            c.state,
            pid,
            code,
            c.config.command.join(" ")
        );
    }

    pub fn container(&self, c: &ContainerStatus) -> anyhow::Result<()> {
        if self.json {
            return self.json(c);
        }
        self.container_line(c);
        Ok(())
    }
}
