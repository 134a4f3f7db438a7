//! `virtc run`: a pod and one container in one step.

use std::process::ExitCode;
use std::time::Instant;

use vc_host::config::PodConfig;
use vc_host::id::PodId;
use vc_host::Runtime;

use crate::cli::RunArgs;
use crate::container::{config_from_args, exit_code};
use crate::pod::apply_vm_args;
use crate::print::Printer;

pub async fn run(rt: &Runtime, out: &Printer, args: RunArgs) -> anyhow::Result<ExitCode> {
    let pod_id = match &args.pod {
        Some(id) => id.clone(),
        None => PodId::new(format!(
            "run-{}-{}",
            std::process::id(),
            vc_host::runtime::record::now()
        ))?,
    };
    let mut container = config_from_args(args.name.clone(), &args.container, args.command.clone())?;
    container.terminal = args.io.tty;
    container.validate()?;
    let mut pod = PodConfig::new(pod_id.clone());
    apply_vm_args(&mut pod, &args.vm);

    let timings = Timings::new(!out.json);
    rt.create_pod(pod).await?;
    let result = async {
        timings.step("pod created");
        // Added before the pod starts, so that a microvm, which has no
        // hotplug, gets the container's disks at boot. Starting the pod
        // creates and starts it in the guest; output waits in the guest
        // until the attach below.
        rt.create_container(&pod_id, container).await?;
        timings.step("container created");
        let options = vc_host::runtime::StartOptions {
            use_pool: !args.no_pool,
        };
        rt.start_pod_with(&pod_id, options).await?;
        timings.step("pod started (VM booted, agent answered, container started)");
        let process = rt
            .attach_container(&pod_id, &args.name, args.io.interactive)
            .await?;
        let code = crate::relay::relay(process, args.io.interactive).await?;
        timings.step("container exited");
        Ok::<_, anyhow::Error>(code)
    }
    .await;
    if !args.keep {
        let _ = rt.stop_pod(&pod_id).await;
        let cleanup = rt.delete_pod(&pod_id).await;
        timings.step("pod stopped and deleted");
        if let (Ok(_), Err(e)) = (&result, cleanup) {
            return Err(anyhow::Error::new(e).context(format!("cannot delete pod {pod_id}")));
        }
    }
    let code = result?;
    if out.json {
        out.json(&serde_json::json!({ "pod": pod_id, "exit_code": code }))?;
    }
    Ok(exit_code(code))
}

/// Prints how long each step took, on stderr, when `VC_TIMINGS` is set.
struct Timings {
    enabled: bool,
    last: std::cell::Cell<Instant>,
}

impl Timings {
    fn new(human: bool) -> Self {
        Self {
            enabled: human && std::env::var_os("VC_TIMINGS").is_some(),
            last: std::cell::Cell::new(Instant::now()),
        }
    }

    fn step(&self, what: &str) {
        let now = Instant::now();
        if self.enabled {
            eprintln!("[{:>7.3} s] {what}", (now - self.last.get()).as_secs_f64());
        }
        self.last.set(now);
    }
}
