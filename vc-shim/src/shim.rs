//! The shim's process lifecycle as containerd drives it: `start` (spawn the
//! serving process of the task's group, or hand back the address of the
//! group's running one), `delete` (cleanup after a dead shim), and the
//! serving process's task service.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::util::write_str_to_file;
use containerd_shim::asynchronous::{spawn, ExitSignal, Shim};
use containerd_shim::protos::api::DeleteResponse;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};
use tracing::info;

use crate::config::{Env, ShimConfig};
use crate::service::{Service, Setup};
use crate::{bundle, cleanup, logging};

/// The shim library's settings: vc's runtime waits for its own children
/// (QEMU and its helpers), so the library must not reap them, and orphans
/// are not collected here; logging is set up by [`logging`].
pub fn shim_config() -> Config {
    Config {
        no_setup_logger: true,
        default_log_level: "info".to_owned(),
        no_reaper: true,
        no_sub_reaper: true,
    }
}

/// One shim process.
pub struct VcShim {
    exit: Arc<ExitSignal>,
    id: String,
    namespace: String,
    bundle: PathBuf,
}

impl std::fmt::Debug for VcShim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcShim")
            .field("id", &self.id)
            .field("namespace", &self.namespace)
            .field("bundle", &self.bundle)
            .finish()
    }
}

fn load_setup() -> Result<Setup, String> {
    let config = ShimConfig::load(&Env::from_process()).map_err(|e| error_chain(&e))?;
    let runtime = vc_host::Runtime::new(config.runtime.clone()).map_err(|e| error_chain(&e))?;
    Ok(Setup { config, runtime })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    crate::service::error_chain(e)
}

#[async_trait]
impl Shim for VcShim {
    type T = Service;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let level = ShimConfig::load(&Env::from_process())
            .map(|c| c.log_level)
            .unwrap_or_else(|_| "info".to_owned());
        // containerd reads `start`'s stdout and stderr together as the
        // socket address: `start` logs nothing.
        if args.action != "start" {
            logging::init(&level, args.debug, args.action.is_empty());
        }
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        VcShim {
            exit: Arc::new(ExitSignal::default()),
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> Result<String, Error> {
        // Refuse at once what the serving process could not use.
        load_setup().map_err(Error::InvalidArgument)?;
        let role =
            bundle::role(&self.bundle).map_err(|e| Error::InvalidArgument(error_chain(&e)))?;
        let group = role.group(&opts.id).to_owned();
        let address = spawn(opts, &group, Vec::new()).await?;
        write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> Result<DeleteResponse, Error> {
        Ok(cleanup::delete(&self.id, &self.bundle).await)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        let setup = load_setup();
        if let Err(e) = &setup {
            tracing::error!(error = %e, "the shim cannot serve: every request will fail");
        }
        info!(namespace = %self.namespace, "shim serving");
        Service::new(self.namespace.clone(), setup, publisher, self.exit.clone())
    }
}
