//! Fault points: places where a test can have the process SIGKILL itself, to
//! prove that a caller killed at any point leaves a pod the next verb
//! recovers (see `docs/reliability.md`, "Killed callers").
//!
//! They exist only in builds with the `fault-injection` cargo feature (the
//! end-to-end tests build `virtc` with it); elsewhere [`point`] compiles to
//! nothing. With the feature, a process whose `VC_FAULT` environment variable
//! names a point kills itself there, with SIGKILL: no destructor, no drop
//! guard and no lock release but the kernel's runs, as when the OOM killer or
//! an impatient supervisor ends a caller.

/// Every fault point, in the order an operation reaches them.
pub const POINTS: &[&str] = &[
    // Create: the pod's directory exists (locked); no record is written.
    "create.dir-made",
    // Create: `state.json` is written, `config.json` is not.
    "create.state-written",
    // Start: the record says the start began (before anything is made).
    "start.recorded",
    // Start: the console logger and the vhost-user daemons run, QEMU does not.
    "start.helpers-spawned",
    // Start: QEMU was spawned, its monitor not yet answered.
    "start.qemu-spawned",
    // Start: the launched VM is in the pod's record; the guest boots.
    "start.vm-recorded",
    // Start: the guest booted and its containers started; the record does
    // not say so yet.
    "start.booted",
    // Start: the record says the guest booted, not yet that the pod runs.
    "start.booted-recorded",
    // Stop: the agent was asked to power off; QEMU is not stopped yet.
    "stop.agent-shutdown",
    // Stop: the VM and its helpers are stopped; the record still says running.
    "stop.vm-stopped",
    // Delete: the VM is cleaned up; the share is still bound.
    "delete.vm-stopped",
    // Delete: the record is final; the pod's directory is still there.
    "delete.recorded",
    // Delete: the pod's configuration is removed, its directory is not.
    "delete.config-removed",
    // Container create (running pod): the record names the container and the
    // create under way; nothing is bound or created in the guest.
    "container-create.recorded",
    // Container create: the rootfs is bound into the share; the guest has
    // not been asked.
    "container-create.bound",
    // Container create: the guest created the container; the record still
    // says the create is under way.
    "container-create.guest-created",
    // Container start: the guest started the main process; the record still
    // says the container is created.
    "container-start.guest-started",
    // Container delete: the guest removed the container; its binds and
    // record remain.
    "container-delete.guest-removed",
    // Container delete: the binds are undone; the record still names it.
    "container-delete.unbound",
    // Exec: the process runs in the guest; nobody waits for it.
    "exec.spawned",
];

/// The environment variable naming the point to die at.
pub const ENV: &str = "VC_FAULT";

/// Dies here, by SIGKILL, when `VC_FAULT` names `name` (in builds with the
/// `fault-injection` feature; a no-op otherwise).
#[inline]
pub fn point(name: &'static str) {
    debug_assert!(POINTS.contains(&name), "unknown fault point {name}");
    #[cfg(feature = "fault-injection")]
    if std::env::var_os(ENV).is_some_and(|v| v == name) {
        eprintln!("vc: fault point {name}: killing this process (SIGKILL)");
        // SAFETY: kill(2) on our own pid with a valid signal; no memory is
        // passed.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    #[cfg(not(feature = "fault-injection"))]
    let _ = name;
}

/// True when this build has fault points.
pub const ENABLED: bool = cfg!(feature = "fault-injection");
