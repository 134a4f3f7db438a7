//! Output of virtc: human-readable tables, or JSON with `--json`.

use serde::Serialize;
use vc_host::config::ResourcesConfig;
use vc_host::network::PodNetwork;
use vc_host::runtime::{ContainerStatus, NetworkUpdateReport, PodEvent, PodStatus};
use vc_proto::ContainerStats;

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

    pub fn network(&self, network: Option<&PodNetwork>) -> anyhow::Result<()> {
        if self.json {
            return self.json(&network);
        }
        let Some(net) = network else {
            println!("no network namespace mirrored");
            return Ok(());
        };
        println!("netns {}", net.netns.display());
        println!(
            "{:<16} {:<18} {:<10} {:<8} ADDRESSES",
            "INTERFACE", "MAC", "TAP", "PLUGGED"
        );
        for link in &net.links {
            let addresses: Vec<String> = net
                .interfaces
                .iter()
                .filter(|i| i.mac == link.mac.0)
                .flat_map(|i| &i.addresses)
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect();
            let plugged = if link.device.is_some() {
                "hotplug"
            } else {
                "launch"
            };
            println!(
                "{:<16} {:<18} {:<10} {:<8} {}",
                link.interface,
                link.mac,
                link.tap,
                plugged,
                addresses.join(" ")
            );
        }
        for route in &net.routes {
            let destination = route
                .destination
                .as_ref()
                .map_or("default".to_owned(), |d| {
                    format!("{}/{}", d.addr, d.prefix_len)
                });
            match route.gateway {
                Some(gw) => println!("route {destination} via {gw}"),
                None => println!("route {destination}"),
            }
        }
        Ok(())
    }

    pub fn network_update(&self, report: &NetworkUpdateReport) -> anyhow::Result<()> {
        if self.json {
            return self.json(report);
        }
        if !report.changed {
            println!("unchanged ({} ms)", report.elapsed_ms);
            return Ok(());
        }
        println!(
            "updated in {} ms: added [{}], removed [{}]",
            report.elapsed_ms,
            report.added.join(", "),
            report.removed.join(", ")
        );
        self.network(report.network.as_ref())
    }

    pub fn pod(&self, pod: &PodStatus) -> anyhow::Result<()> {
        if self.json {
            return self.json(pod);
        }
        println!("pod {}: {}", pod.id, pod.state);
        if let Some(death) = &pod.broken {
            println!("  broken  {death}");
        }
        for proc in &pod.processes {
            println!("  process {:<20} pid {}", proc.name, proc.pid);
        }
        if let Some(console) = &pod.console_log {
            println!("  console {}", console.display());
        }
        if let Some(cgroup) = &pod.host_cgroup {
            for dir in &cgroup.dirs {
                println!("  cgroup  {}", dir.display());
            }
            println!(
                "  limits  memory {} MiB, {} tasks",
                cgroup.limits.memory_bytes >> 20,
                cgroup.limits.pids_max
            );
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

/// Shows a limit: a number, or `max` when unset or unlimited.
fn limit(v: Option<u64>) -> String {
    match v {
        None | Some(u64::MAX) => "max".to_owned(),
        Some(n) => n.to_string(),
    }
}

impl Printer {
    /// A container's limits after an update.
    pub fn resources(&self, r: &ResourcesConfig) -> anyhow::Result<()> {
        if self.json {
            return self.json(r);
        }
        println!("memory limit   {}", limit(r.memory_limit_bytes));
        println!("pids limit     {}", limit(r.pids_limit));
        println!(
            "cpu quota      {} us per {} us",
            limit(r.cpu_quota_us),
            r.cpu_period_us.unwrap_or(100_000)
        );
        println!(
            "cpu weight     {}",
            r.cpu_weight
                .map_or_else(|| "default".to_owned(), |w| w.to_string())
        );
        Ok(())
    }

    /// A container's resource usage.
    pub fn stats(&self, s: &ContainerStats) -> anyhow::Result<()> {
        if self.json {
            return self.json(s);
        }
        println!(
            "cpu            {} us (user {} us, system {} us)",
            s.cpu_usage_us, s.cpu_user_us, s.cpu_system_us
        );
        println!(
            "memory         {} of {} bytes",
            s.memory_usage_bytes,
            limit(s.memory_limit_bytes)
        );
        println!("pids           {} of {}", s.pids, limit(s.pids_limit));
        println!(
            "block io       read {} bytes, written {} bytes",
            s.blkio_read_bytes, s.blkio_write_bytes
        );
        Ok(())
    }

    /// One pod event, as a line (JSON Lines with `--json`).
    pub fn event(&self, e: &PodEvent) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string(e)?);
            return Ok(());
        }
        match e {
            PodEvent::Oom { container } => println!("oom      container {container}"),
            PodEvent::Exited {
                container,
                exec_id,
                code,
            } => println!(
                "exited   container {container} process {} code {code}",
                exec_id.as_deref().unwrap_or("main")
            ),
        }
        Ok(())
    }
}
