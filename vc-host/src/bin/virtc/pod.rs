//! `virtc pod ...`

use std::io::Write;

use anyhow::Context;
use vc_host::config::PodConfig;
use vc_host::runtime::StartOptions;
use vc_host::Runtime;

use crate::cli::{NetworkCommand, PodCommand, VmArgs};
use crate::print::Printer;

/// Applies the VM flags to a pod configuration.
pub fn apply_vm_args(config: &mut PodConfig, vm: &VmArgs) {
    if let Some(v) = vm.vcpus {
        config.vm.vcpus = v;
    }
    if let Some(m) = vm.memory_mib {
        config.vm.memory_mib = m;
    }
    if let Some(m) = vm.machine {
        config.vm.machine = m;
    }
    if let Some(ns) = &vm.netns {
        config.netns = Some(ns.clone());
    }
    if let Some(t) = vm.boot_timeout {
        config.vm.boot_timeout_secs = t;
    }
}

/// Reads a pod configuration file, TOML or JSON by extension.
fn read_config(path: &std::path::Path) -> anyhow::Result<PodConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text)
            .with_context(|| format!("invalid pod config {}", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("invalid pod config {}", path.display()))?
    };
    Ok(config)
}

pub async fn run(rt: &Runtime, out: &Printer, cmd: PodCommand) -> anyhow::Result<()> {
    match cmd {
        PodCommand::Create {
            id,
            config,
            hostname,
            vm,
        } => {
            let mut pod = match config {
                Some(path) => {
                    let pod = read_config(&path)?;
                    anyhow::ensure!(
                        pod.id == id,
                        "the pod id {} on the command line differs from {} in {}",
                        id,
                        pod.id,
                        path.display()
                    );
                    pod
                }
                None => PodConfig::new(id),
            };
            pod.hostname = hostname.or(pod.hostname);
            apply_vm_args(&mut pod, &vm);
            out.pod(&rt.create_pod(pod).await?)
        }
        PodCommand::Start { id, no_pool } => {
            let options = StartOptions { use_pool: !no_pool };
            out.pod(&rt.start_pod_with(&id, options).await?)
        }
        PodCommand::Stop { id } => out.pod(&rt.stop_pod(&id).await?),
        PodCommand::Delete { id, force } => {
            if force {
                rt.force_delete_pod(&id).await?;
            } else {
                rt.delete_pod(&id).await?;
            }
            if out.json {
                out.json(&serde_json::json!({ "deleted": id }))?;
            }
            Ok(())
        }
        PodCommand::List => out.pods(&rt.list_pods().await?),
        PodCommand::Status { id } => out.pod(&rt.pod_status(&id).await?),
        PodCommand::Pause { id } => out.pod(&rt.pause_pod(&id).await?),
        PodCommand::Resume { id } => out.pod(&rt.resume_pod(&id).await?),
        PodCommand::Events { id } => {
            let mut events = rt.pod_events(&id).await?;
            while let Some(e) = events.next().await? {
                out.event(&e)?;
            }
            Ok(())
        }
        PodCommand::Network {
            command: NetworkCommand::Update { id },
        } => out.network_update(&rt.update_pod_network(&id).await?),
        PodCommand::Network {
            command: NetworkCommand::List { id },
        } => out.network(rt.pod_network(&id).await?.as_ref()),
        PodCommand::Enter { id, command } => {
            let output = rt.enter_pod(&id, command).await?;
            if out.json {
                return out.json(&serde_json::json!({
                    "stdout": String::from_utf8_lossy(&output.stdout),
                    "stderr": String::from_utf8_lossy(&output.stderr),
                    "exit_code": output.exit_code,
                }));
            }
            std::io::stdout().write_all(&output.stdout)?;
            std::io::stderr().write_all(&output.stderr)?;
            anyhow::ensure!(
                output.exit_code == 0,
                "the command exited with code {}",
                output.exit_code
            );
            Ok(())
        }
    }
}
