//! `virtc container ...`

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use vc_host::config::{ContainerConfig, ResourcesConfig, UserConfig};
use vc_host::id::ContainerId;
use vc_host::runtime::ProcessConfig;
use vc_host::Runtime;

use crate::cli::{ContainerArgs, ContainerCommand, ExecArgs, LimitArgs};
use crate::print::Printer;

/// Builds a container configuration from the command line.
pub fn config_from_args(
    id: ContainerId,
    args: &ContainerArgs,
    command: Vec<String>,
) -> anyhow::Result<ContainerConfig> {
    let mut c = ContainerConfig::new(id, args.rootfs.clone().unwrap_or_default(), command);
    c.rootfs_image = args.rootfs_image.clone();
    c.disks = args.disks.clone();
    c.readonly_rootfs = args.readonly;
    c.env = args.env.clone();
    if let Some(cwd) = &args.cwd {
        c.cwd = cwd.clone();
    }
    if let Some(user) = &args.user {
        c.user = parse_user(user)?;
    }
    c.hostname = args.hostname.clone();
    c.resources = limits(&args.limits);
    c.volumes = args.volumes.clone();
    c.tmpfs = args.tmpfs.clone();
    c.shm_size_bytes = args.shm_size;
    c.seccomp = vc_host::config::parse_seccomp(&args.seccomp)?;
    Ok(c)
}

/// The limits given on the command line.
fn limits(args: &LimitArgs) -> ResourcesConfig {
    ResourcesConfig {
        memory_limit_bytes: args.memory_limit,
        cpu_quota_us: args.cpu_quota_us,
        cpu_period_us: args.cpu_period_us,
        cpu_weight: args.cpu_weight,
        pids_limit: args.pids_limit,
    }
}

fn parse_user(user: &str) -> anyhow::Result<UserConfig> {
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid: u32 = uid
        .parse()
        .with_context(|| format!("user {user:?} is not UID[:GID]"))?;
    let gid: u32 = match gid {
        Some(g) => g
            .parse()
            .with_context(|| format!("user {user:?} is not UID[:GID]"))?,
        None => uid,
    };
    Ok(UserConfig {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// Parses a signal given as a number or a name (`TERM`, `SIGTERM`).
pub fn parse_signal(s: &str) -> anyhow::Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    let sig: nix::sys::signal::Signal = name
        .parse()
        .with_context(|| format!("unknown signal {s:?}"))?;
    Ok(sig as i32)
}

pub async fn run(rt: &Runtime, out: &Printer, cmd: ContainerCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainerCommand::Create {
            pod,
            id,
            args,
            command,
        } => {
            let config = config_from_args(id, &args, command)?;
            out.container(&rt.create_container(&pod, config).await?)?;
        }
        ContainerCommand::Start { pod, id } => {
            out.container(&rt.start_container(&pod, &id).await?)?
        }
        ContainerCommand::Stop { pod, id, grace } => out.container(
            &rt.stop_container(&pod, &id, Duration::from_secs(grace))
                .await?,
        )?,
        ContainerCommand::Delete { pod, id } => {
            rt.delete_container(&pod, &id).await?;
            if out.json {
                out.json(&serde_json::json!({ "deleted": id }))?;
            }
        }
        ContainerCommand::Kill {
            pod,
            id,
            signal,
            all,
        } => {
            rt.kill_container(&pod, &id, parse_signal(&signal)?, all)
                .await?
        }
        ContainerCommand::Status { pod, id } => {
            out.container(&rt.container_status(&pod, &id).await?)?
        }
        ContainerCommand::Exec(args) => return exec(rt, out, args).await,
        ContainerCommand::Wait { pod, id } => {
            let code = match rt.wait_container(&pod, &id).await {
                Ok(code) => code,
                Err(e) => match e.exit_code() {
                    // The VM went away: say so, and exit with its defined code.
                    Some(code) => {
                        eprintln!("virtc: {}", crate::shown(&e));
                        code
                    }
                    None => return Err(e.into()),
                },
            };
            if out.json {
                out.json(&serde_json::json!({ "exit_code": code }))?;
            }
            return Ok(exit_code(code));
        }
        ContainerCommand::Update { pod, id, limits: l } => {
            let update = limits(&l);
            anyhow::ensure!(
                !update.is_empty(),
                "nothing to update: give at least one of --memory-limit, --pids-limit, \
                 --cpu-quota-us, --cpu-period-us, --cpu-weight"
            );
            let now = rt.update_container(&pod, &id, &update).await?;
            out.resources(&now)?;
        }
        ContainerCommand::Stats { pod, id } => out.stats(&rt.container_stats(&pod, &id).await?)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `container exec`: starts the process, relays its streams, returns its code.
async fn exec(rt: &Runtime, out: &Printer, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let mut config = ProcessConfig::new(args.command)
        .terminal(args.io.tty)
        .stdin(args.io.interactive);
    config.env = args.env;
    config.cwd = args.cwd;
    if let Some(user) = &args.user {
        config.user = Some(parse_user(user)?);
    }
    let process = rt.exec_process(&args.pod, &args.id, config).await?;
    let code = crate::relay::relay(process, args.io.interactive).await?;
    if out.json {
        out.json(&serde_json::json!({ "exit_code": code }))?;
    }
    Ok(exit_code(code))
}

/// A process exit code as this process's exit code.
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(255))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(parse_signal("9").expect("number"), 9);
        assert_eq!(parse_signal("TERM").expect("name"), 15);
        assert_eq!(parse_signal("sigkill").expect("name"), 9);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn users() {
        assert_eq!(parse_user("1000").expect("uid").gid, 1000);
        assert_eq!(parse_user("1:2").expect("uid:gid").gid, 2);
        assert!(parse_user("root").is_err());
    }

    #[test]
    fn limits() {
        use crate::cli::parse_limit;
        assert_eq!(parse_limit("4096"), Ok(4096));
        assert_eq!(parse_limit("64M"), Ok(64 << 20));
        assert_eq!(parse_limit("2g"), Ok(2 << 30));
        assert_eq!(parse_limit("max"), Ok(u64::MAX));
        assert!(parse_limit("lots").is_err());
        assert!(parse_limit("M").is_err());
        assert!(parse_limit("99999999999999G").is_err());
    }
}
