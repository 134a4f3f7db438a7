//! Real QEMU, real helper daemons, the built guest image, under whatever
//! accelerator the host offers (TCG on the development machines).
//!
//! Needs `cargo xtask deps` (QEMU, vhost-device-vsock, virtiofsd) and
//! `cargo xtask guest-image` (or `VC_GUEST_IMAGE_DIR`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vc_host::agent::{AgentClient, ConnectOptions};
use vc_host::hypervisor::{
    Hypervisor, Machine, ProcessRecord, QemuHypervisor, TapSpec, Vm, VmConfig, VmRecord, VmSpec,
    VmStatus, VmmUser, DEFAULT_VMM_USER,
};

/// The guest image directory; fails the test when the image is missing.
fn image_dir() -> PathBuf {
    let dir = std::env::var_os("VC_GUEST_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
                .join("guest-image")
        });
    for file in ["vmlinuz", "initrd.img"] {
        assert!(
            dir.join(file).is_file(),
            "{} is missing: build the guest image with `cargo xtask guest-image` \
             (or point VC_GUEST_IMAGE_DIR at one)",
            dir.join(file).display()
        );
    }
    dir
}

struct Fixture {
    _tmp: tempfile::TempDir,
    hypervisor: QemuHypervisor,
    spec: VmSpec,
}

fn fixture(name: &str) -> Fixture {
    fixture_with(name, VmConfig::default())
}

fn fixture_with(name: &str, config: VmConfig) -> Fixture {
    let image = image_dir();
    let config = VmConfig {
        kernel: Some(image.join("vmlinuz")),
        initrd: Some(image.join("initrd.img")),
        ..config
    };
    let settings = config
        .validate()
        .unwrap_or_else(|e| panic!("{e}: {}", source_chain(&e)));
    // Short paths: sockets live in the run directory.
    let tmp = tempfile::Builder::new()
        .prefix("vchv")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).expect("shared dir");
    // Confined as pods are: QEMU and the vsock daemon as the VMM user.
    let vmm_user = VmmUser::lookup(DEFAULT_VMM_USER).unwrap_or_else(|e| panic!("{e}"));
    let spec = VmSpec {
        name: Some(name.to_owned()),
        shared_dir: Some(shared),
        vmm_user: Some(vmm_user),
        ..VmSpec::new(settings, tmp.path().join("vm"))
    };
    let hypervisor = QemuHypervisor::new(tmp.path().join("state"));
    Fixture {
        _tmp: tmp,
        hypervisor,
        spec,
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(&format!(" <- {s}"));
        cur = s.source();
    }
    out
}

/// Prints the VM's logs and kills what is left when a test panics.
struct Diagnose<'a>(&'a Vm);

impl Drop for Diagnose<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.0.diagnostics(40));
            let rec = self.0.record();
            for p in std::iter::once(&rec.qemu).chain(rec.daemons.iter().map(|d| &d.process)) {
                if p.is_alive() {
                    let _ = p.signal(nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

async fn wait_for_console(vm: &Vm, needle: &str, timeout: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let console = std::fs::read_to_string(&vm.record().console_log).unwrap_or_default();
        if console.contains(needle) {
            return Some(t0.elapsed());
        }
        if !vm.is_running() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Not even a zombie: the pid is gone or belongs to another process.
fn fully_gone(p: &ProcessRecord) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", p.pid)) {
        Err(_) => true,
        Ok(stat) => {
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.get(19).and_then(|f| f.parse::<u64>().ok()) != Some(p.start_time)
        }
    }
}

fn assert_nothing_left(rec: &VmRecord) {
    assert!(fully_gone(&rec.qemu), "QEMU pid {} left", rec.qemu.pid);
    for d in &rec.daemons {
        assert!(
            fully_gone(&d.process),
            "{} pid {} left",
            d.kind,
            d.process.pid
        );
    }
    for p in &rec.cleanup {
        assert!(!p.exists(), "{} left", p.display());
    }
    // Only logs stay in the run directory.
    let left: Vec<String> = std::fs::read_dir(&rec.run_dir)
        .expect("run dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_pauses_resumes_and_stops_leaving_nothing() {
    let f = fixture("hv-boot");
    let t0 = Instant::now();
    let vm = f
        .hypervisor
        .launch(&f.spec)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}{}", source_chain(&e)));
    let launched = t0.elapsed();
    let _diag = Diagnose(&vm);
    let rec = vm.record().clone();
    assert_eq!(
        rec.daemons.len(),
        3,
        "console logger, vsock and virtiofs daemons"
    );
    for d in &rec.daemons {
        assert!(d.process.is_alive(), "{} is running", d.kind);
    }

    let kernel = wait_for_console(&vm, "Linux version", Duration::from_secs(60))
        .await
        .expect("the kernel prints its banner on the console");
    let init = wait_for_console(&vm, "Run /init", Duration::from_secs(60)).await;
    eprintln!(
        "launch returned after {launched:?}; kernel banner {:?} and /init {:?} after launch",
        kernel, init
    );
    assert!(vm.is_running());
    assert_eq!(vm.status().await.expect("status"), VmStatus::Running);

    // The vsock device works end to end: the agent accepts and answers the
    // handshake. The library's connect bounds each attempt (a hybrid CONNECT
    // made while the guest's vsock driver is set up can go unanswered) and
    // retries until its deadline.
    let opts = ConnectOptions::default()
        .port(vm.agent_port())
        .deadline(Duration::from_secs(60));
    let agent = AgentClient::connect(vm.agent_addr(), &opts)
        .await
        .unwrap_or_else(|e| panic!("agent: {e}{}", source_chain(&e)));
    eprintln!(
        "agent answered {:?} after launch",
        t0.elapsed().saturating_sub(launched)
    );
    drop(agent);

    vm.pause().await.expect("pause");
    assert_eq!(vm.status().await.expect("status"), VmStatus::Paused);
    vm.resume().await.expect("resume");
    assert_eq!(vm.status().await.expect("status"), VmStatus::Running);

    // Another process would reopen the VM from its persisted record.
    let json = serde_json::to_string(vm.record()).expect("record to json");
    let again =
        Vm::from_record(serde_json::from_str(&json).expect("json to record")).expect("reopen");
    assert!(again.is_running());
    assert_eq!(again.agent_addr(), vm.agent_addr());

    again.stop(Duration::from_secs(10)).await.expect("stop");
    assert!(!vm.is_running());
    assert_eq!(vm.status().await.expect("status"), VmStatus::Exited);
    assert_nothing_left(&rec);
    // Idempotent.
    vm.stop(Duration::from_secs(1)).await.expect("second stop");
    assert!(vm.console_tail(5).lines().count() > 0, "console kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_after_qemu_was_sigkilled_cleans_every_helper() {
    let f = fixture("hv-kill");
    let vm = f
        .hypervisor
        .launch(&f.spec)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}{}", source_chain(&e)));
    let _diag = Diagnose(&vm);
    let rec = vm.record().clone();
    assert!(vm.is_running());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rec.qemu.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL QEMU");
    assert!(vm.wait_exit(Duration::from_secs(5)).await, "QEMU gone");
    assert!(!vm.is_running());

    vm.stop(Duration::from_secs(5)).await.expect("stop");
    assert_nothing_left(&rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_kernel_fails_the_launch_and_leaves_nothing() {
    let mut f = fixture("hv-broken");
    // Not a kernel: QEMU refuses it at start-up, after the daemons started.
    let bogus = f.spec.run_dir.with_file_name("bogus-vmlinuz");
    std::fs::write(&bogus, b"not a kernel").expect("bogus kernel");
    f.spec.settings.kernel = bogus;
    let err = f
        .hypervisor
        .launch(&f.spec)
        .await
        .expect_err("QEMU cannot load that kernel");
    let msg = err.to_string();
    assert!(msg.contains("QEMU exited"), "{msg}");
    assert!(
        msg.to_lowercase().contains("kernel"),
        "the log tail explains: {msg}"
    );
    let left: Vec<String> = std::fs::read_dir(&f.spec.run_dir)
        .expect("run dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".log"))
        .collect();
    assert!(left.is_empty(), "left in the run directory: {left:?}");
    // No process is left that was started for this run directory: named in
    // its arguments (virtiofsd), working in it (the vsock daemon), or
    // carrying the VM's name (QEMU, which is handed descriptors, not paths).
    let run_dir = f.spec.run_dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok())
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let state = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
                .split_whitespace()
                .next();
            state.is_some_and(|s| s != "Z")
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cwd = std::fs::read_link(e.path().join("cwd")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(&run_dir)
                || cmdline.contains("-name hv-broken ")
                || cwd.starts_with(&f.spec.run_dir))
            .then_some(cmdline)
        })
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q35_boots_with_pci_devices() {
    let f = fixture_with(
        "hv-q35",
        VmConfig {
            machine: Machine::Q35,
            ..VmConfig::default()
        },
    );
    let vm = f
        .hypervisor
        .launch(&f.spec)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}{}", source_chain(&e)));
    let _diag = Diagnose(&vm);
    let rec = vm.record().clone();
    let init = wait_for_console(&vm, "Run /init", Duration::from_secs(90)).await;
    eprintln!("q35: /init after {init:?}");
    assert!(init.is_some(), "q35 guest reaches init");
    assert!(vm.is_running());
    vm.stop(Duration::from_secs(10)).await.expect("stop");
    assert_nothing_left(&rec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_runs_in_the_given_network_namespace_with_its_taps() {
    // A namespace of our own, held by a process: no `ip netns`, no mounts.
    let holder = std::process::Command::new("unshare")
        .args(["--net", "sleep", "120"])
        .spawn()
        .expect("unshare --net sleep (util-linux)");
    let holder_pid = holder.id();
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _holder = Holder(holder);
    let ns_path = PathBuf::from(format!("/proc/{holder_pid}/ns/net"));
    let mine = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let t = Instant::now();
    while std::fs::read_link(&ns_path).ok().is_none_or(|l| l == mine) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "unshare never entered its namespace"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let theirs = std::fs::read_link(&ns_path).expect("holder netns");

    let mut f = fixture("hv-netns");
    f.spec.netns = Some(ns_path);
    f.spec.taps = vec![TapSpec {
        ifname: "vctap0".to_owned(),
        mac: "02:00:c0:00:02:0a".parse().expect("mac"),
    }];
    let vm = f
        .hypervisor
        .launch(&f.spec)
        .await
        .unwrap_or_else(|e| panic!("launch: {e}{}", source_chain(&e)));
    let _diag = Diagnose(&vm);
    let rec = vm.record().clone();
    let qemu_ns = std::fs::read_link(format!("/proc/{}/ns/net", rec.qemu.pid)).expect("qemu netns");
    assert_eq!(qemu_ns, theirs, "QEMU is in the given namespace");
    // The tap was opened (and so made) for QEMU inside that namespace only.
    let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.qemu.pid)).expect("net/dev");
    assert!(dev.contains("vctap0:"), "{dev}");
    let own = std::fs::read_to_string("/proc/self/net/dev").expect("own net/dev");
    assert!(
        !own.contains("vctap0:"),
        "no tap in the test's own namespace"
    );
    // The daemons stay in ours.
    for d in &rec.daemons {
        let ns =
            std::fs::read_link(format!("/proc/{}/ns/net", d.process.pid)).expect("daemon netns");
        assert_eq!(ns, mine, "{} stays in the host namespace", d.kind);
    }
    vm.stop(Duration::from_secs(10)).await.expect("stop");
    assert_nothing_left(&rec);
}
