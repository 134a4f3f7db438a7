//! Privileged tests of the real thing on the host (root, cgroup2): a busybox
//! rootfs made in a temporary directory, a container created under temporary
//! paths, its processes forked the way the agent forks them (raw `clone` with
//! the plan's flags, stdio on pipes, an error pipe), and everything removed by
//! guards even when an assertion fails.
//!
//! They need root and a cgroup2 mount (`/sys/fs/cgroup`, or the `unified`
//! hierarchy of a host in hybrid mode); without them they fail, naming what is
//! missing. Limits are not exercised here (a hybrid host has no cgroup2
//! controllers); the values they write are tested on a fake cgroupfs in
//! `cgroup/`, their effect in the end-to-end tests.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use vc_proto::{ContainerSpec, Mount, ProcessSpec, Resources, Rootfs, User};

use super::*;

const BUSYBOX: &str = "/usr/bin/busybox";
const TIMEOUT: Duration = Duration::from_secs(20);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the container tests need root (they mount, clone namespaces and create cgroups)"
    );
}

/// The cgroup2 mount: `/sys/fs/cgroup`, or any other cgroup2 mount (a host in
/// hybrid mode has it at `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> PathBuf {
    let main = Path::new("/sys/fs/cgroup");
    if cgroup::check_cgroup2(main).is_ok() {
        return main.to_path_buf();
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if !right.starts_with("cgroup2 ") {
                return None;
            }
            left.split_whitespace().nth(4).map(PathBuf::from)
        })
        .expect("no cgroup2 mount on this host: mount one (mount -t cgroup2 none /sys/fs/cgroup)")
}

/// A directory tree with the static busybox: enough for `/bin/sh`.
fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static with `cargo xtask deps`"
    );
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp", "root"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).expect("copy busybox");
    for applet in [
        "sh", "sleep", "cat", "id", "hostname", "ls", "grep", "wc", "mknod", "head", "touch",
    ] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(dir.join("etc/hosts"), "").expect("write");
    std::fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod");
}

/// Temporary paths for one test, and the cleanup of its cgroup parent.
struct TestEnv {
    dir: tempfile::TempDir,
    paths: ContainerPaths,
}

impl TestEnv {
    fn new(name: &str) -> Self {
        require_root();
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ContainerPaths {
            state_dir: dir.path().join("containers"),
            etc_dir: dir.path().join("pod"),
            cgroup_root: cgroup2_root(),
            cgroup_parent: format!(
                "vc-test-{}-{}-{name}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ),
            device_wait: Duration::from_secs(1),
        };
        std::fs::create_dir_all(&paths.etc_dir).expect("mkdir");
        busybox_rootfs(&dir.path().join("rootfs"));
        Self { dir, paths }
    }

    fn rootfs(&self) -> String {
        self.dir
            .path()
            .join("rootfs")
            .to_str()
            .expect("utf-8")
            .to_string()
    }

    fn spec(&self, id: &str, args: &[&str]) -> ContainerSpec {
        ContainerSpec {
            id: id.to_string(),
            rootfs: Rootfs::Path(self.rootfs()),
            readonly_rootfs: false,
            hostname: format!("{id}-host"),
            process: process(args),
            mounts: vec![],
            resources: Resources::default(),
            masked_paths: vc_proto::DEFAULT_MASKED_PATHS.map(String::from).to_vec(),
            readonly_paths: vc_proto::DEFAULT_READONLY_PATHS.map(String::from).to_vec(),
        }
    }

    fn create(&self, spec: &ContainerSpec) -> Guard {
        Guard(Some(
            Container::create_in(spec, &self.paths).expect("create"),
        ))
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let parent = self.paths.cgroup_root.join(&self.paths.cgroup_parent);
        let _ = std::fs::remove_dir(parent);
    }
}

fn process(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".to_string()],
        cwd: "/".to_string(),
        no_new_privileges: true,
        ..ProcessSpec::default()
    }
}

/// Destroys the container when the test ends, however it ends.
struct Guard(Option<Container>);

impl Guard {
    fn get(&self) -> &Container {
        self.0.as_ref().expect("container")
    }

    fn destroy(mut self) {
        self.0
            .take()
            .expect("container")
            .destroy()
            .expect("destroy");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            if let Err(e) = c.destroy() {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// A process forked as the agent forks them.
struct Child {
    pid: Pid,
    out: File,
}

impl Child {
    /// Reads stdout and stderr until end of file.
    fn read_to_end(&mut self) -> String {
        let mut out = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out; output so far: {}",
                String::from_utf8_lossy(&out)
            );
            let mut fds = [PollFd::new(self.out.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            nix::poll::poll(&mut fds, PollTimeout::from(ms)).expect("poll");
            match self.out.read(&mut buf).expect("read") {
                0 => return String::from_utf8_lossy(&out).into_owned(),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Reads one line (the process says it is ready).
    fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            let mut fds = [PollFd::new(self.out.as_fd(), PollFlags::POLLIN)];
            let n = nix::poll::poll(&mut fds, PollTimeout::from(20_000u16)).expect("poll");
            assert!(n > 0, "no line within 20 s");
            assert_eq!(self.out.read(&mut byte).expect("read"), 1, "end of output");
            line.push(byte[0]);
        }
        String::from_utf8_lossy(&line).trim_end().to_string()
    }

    fn wait(&self) -> WaitStatus {
        waitpid(self.pid, None).expect("waitpid")
    }
}

/// Forks with the plan's flags, puts stdio on a pipe (stdin on /dev/null), and
/// waits for the exec: `Err` is what the child reported on the error pipe.
fn spawn(plan: &LaunchPlan) -> Result<Child, (ChildSetupError, WaitStatus)> {
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let null: OwnedFd = File::open("/dev/null").expect("open /dev/null").into();
    let flags = plan.clone_flags().bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: clone without a new stack forks; the child below only makes
    // system calls and calls `enter_in_child`, which allocates nothing.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    assert!(pid >= 0, "clone: {}", nix::errno::Errno::last());
    if pid == 0 {
        // SAFETY: dup2 on descriptors this process owns.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(out_w.as_raw_fd(), 2);
        }
        let error = match plan.enter_in_child() {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let bytes = error.encode();
        // SAFETY: writing a stack buffer, then leaving without unwinding.
        unsafe {
            libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127);
        }
    }
    let pid = Pid::from_raw(pid as i32);
    drop(out_w);
    drop(err_w);
    let mut report = Vec::new();
    File::from(err_r)
        .read_to_end(&mut report)
        .expect("read error pipe");
    if !report.is_empty() {
        let status = waitpid(pid, None).expect("waitpid");
        let error = ChildSetupError::decode(&report).expect("a whole error record");
        return Err((error, status));
    }
    Ok(Child {
        pid,
        out: File::from(out_r),
    })
}

fn run_to_end(plan: &LaunchPlan) -> (String, WaitStatus) {
    let mut child =
        spawn(plan).unwrap_or_else(|(e, _)| panic!("launch failed: {e}: {}", e.errno()));
    let out = child.read_to_end();
    (out, child.wait())
}

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let p = path.to_str().expect("utf-8");
    info.lines().any(|l| l.split_whitespace().nth(4) == Some(p))
}

const SCRIPT: &str = "echo pid=$$; echo host=$(hostname); echo uid=$(id -u) gid=$(id -g) groups=$(id -G); \
     echo foo=$FOO; echo cwd=$(pwd); echo etc_hostname=$(cat /etc/hostname); \
     echo hosts=$(cat /etc/hosts); ls /dev | tr '\\n' ' ' | sed 's/^/dev=/'; echo; \
     grep CapBnd /proc/self/status; grep CapEff /proc/self/status; grep NoNewPrivs /proc/self/status; \
     [ -e /work ] && echo leak=/work; [ -e /proc/1/root/work ] && echo leak=proc; \
     echo nofile=$(ulimit -n); grep '^0::' /proc/self/cgroup; \
     grep -qx 1 /sys/fs/cgroup/cgroup.procs && echo cgroup-has-pid1; \
     grep ' /sys/fs/cgroup ' /proc/mounts | cut -d' ' -f3,4 | cut -d, -f1; true";

#[test]
fn main_process_is_pid_1_with_its_hostname_user_and_mounts() {
    let env = TestEnv::new("main");
    std::fs::write(env.paths.etc_dir.join("hosts"), "192.0.2.1 pod-peer\n").expect("write");
    let mut spec = env.spec("c-main", &["/bin/busybox", "sh", "-c", SCRIPT]);
    spec.process.user = User {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![10, 20],
    };
    spec.process.env.push("FOO=bar baz".to_string());
    spec.process.cwd = "/tmp".to_string();
    spec.process.rlimits = vec![vc_proto::Rlimit {
        resource: "nofile".into(),
        soft: 100,
        hard: 200,
    }];
    let c = env.create(&spec);
    let plan = c
        .get()
        .launch_plan(&spec.process, LaunchKind::Main)
        .expect("plan");
    assert_eq!(
        plan.clone_flags(),
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
    );
    let (out, status) = run_to_end(&plan);
    assert_eq!(
        status,
        WaitStatus::Exited(status.pid().expect("pid"), 0),
        "{out}"
    );
    for want in [
        "pid=1",
        "host=c-main-host",
        "uid=1000 gid=1001 groups=1001 10 20",
        "foo=bar baz",
        "cwd=/tmp",
        "etc_hostname=c-main-host",
        "hosts=192.0.2.1 pod-peer",
        "CapBnd:\t00000000a80425fb",
        "CapEff:\t0000000000000000",
        "NoNewPrivs:\t1",
        "nofile=100",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let dev = out
        .lines()
        .find(|l| l.starts_with("dev="))
        .expect("ls /dev");
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
    ] {
        assert!(
            dev.split_whitespace()
                .any(|n| n.trim_start_matches("dev=") == node),
            "{node} in {dev}"
        );
    }
    assert!(
        !out.contains("leak="),
        "the agent's files are visible:\n{out}"
    );
    // Its own cgroup namespace, rooted at the container's cgroup, mounted
    // read-only at /sys/fs/cgroup.
    for want in ["0::/", "cgroup-has-pid1", "cgroup2 ro"] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} (cgroup namespace and mount):\n{out}"
        );
    }
    c.destroy();
}

#[test]
fn root_keeps_exactly_the_kept_capabilities() {
    let env = TestEnv::new("caps");
    let script =
        "grep -e Cap -e ^Seccomp: /proc/self/status; touch /dev/x && echo devtmpfs-writable";
    let spec = env.spec("c-caps", &["sh", "-c", script]);
    let c = env.create(&spec);
    let (out, _) = run_to_end(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    );
    for want in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t00000000a80425fb",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "Seccomp:\t2",
        "devtmpfs-writable",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }

    let mut p = spec.process.clone();
    p.capabilities = Some(vec!["CAP_KILL".into(), "net_admin".into()]);
    let (out, _) = run_to_end(&c.get().launch_plan(&p, LaunchKind::Main).expect("plan"));
    assert!(out.contains("CapEff:\t0000000000001020"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000001020"), "{out}");
    c.destroy();
}

#[test]
fn volumes_tmpfs_and_a_readonly_root() {
    let env = TestEnv::new("mounts");
    let rw = env.dir.path().join("rw");
    let ro = env.dir.path().join("ro");
    std::fs::create_dir_all(&rw).expect("mkdir");
    std::fs::create_dir_all(&ro).expect("mkdir");
    std::fs::write(ro.join("from-host"), "hello from the host\n").expect("write");
    let script = "touch /newfile 2>/dev/null && echo root=rw || echo root=ro; \
         echo data > /vol/rw/f && echo vol-rw=ok; \
         (echo data > /vol/ro/f) 2>/dev/null && echo vol-ro=writable || echo vol-ro=refused; \
         cat /vol/ro/from-host; \
         dd if=/dev/zero of=/scratch/big bs=1024 count=2048 2>/dev/null || echo tmpfs=full; \
         grep ' /dev/shm ' /proc/mounts; grep ' /scratch ' /proc/mounts; \
         echo > /tmp/x 2>/dev/null || echo tmp=ro";
    let mut spec = env.spec("c-mounts", &["sh", "-c", script]);
    spec.readonly_rootfs = true;
    spec.mounts = vec![
        Mount {
            source: rw.to_str().expect("utf-8").into(),
            destination: "/vol/rw".into(),
            fstype: "bind".into(),
            options: vec!["rbind".into()],
        },
        Mount {
            source: ro.to_str().expect("utf-8").into(),
            destination: "/vol/../vol/ro".into(),
            fstype: "bind".into(),
            options: vec!["ro".into(), "nosuid".into()],
        },
        Mount {
            source: "tmpfs".into(),
            destination: "/scratch".into(),
            fstype: "tmpfs".into(),
            options: vec!["size=1m".into(), "mode=1777".into()],
        },
        Mount {
            source: "shm".into(),
            destination: "/dev/shm".into(),
            fstype: "tmpfs".into(),
            options: vec!["size=2m".into(), "nosuid".into(), "nodev".into()],
        },
    ];
    // The dd above needs it.
    std::os::unix::fs::symlink("busybox", Path::new(&env.rootfs()).join("bin/dd"))
        .expect("symlink");
    let c = env.create(&spec);
    let (out, _) = run_to_end(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    );
    for want in [
        "root=ro",
        "vol-rw=ok",
        "vol-ro=refused",
        "hello from the host",
        "tmpfs=full",
        "tmp=ro",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let mount_line = |point: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(point))
            .unwrap_or_else(|| panic!("no {point} in:\n{out}"))
            .to_string()
    };
    let shm = mount_line("/dev/shm");
    for opt in ["tmpfs", "nosuid", "nodev", "size=2048k"] {
        assert!(shm.contains(opt), "{opt} in {shm}");
    }
    assert!(mount_line("/scratch").contains("size=1024k"));
    assert_eq!(
        std::fs::read_to_string(rw.join("f")).expect("written in the container"),
        "data\n"
    );
    assert!(!Path::new(&env.rootfs()).join("newfile").exists());
    c.destroy();
}

/// Prints what the masks, read-only paths, device allow-list and `/dev` flags
/// look like from inside. It writes core_pattern's own value back, so that a
/// failure of the read-only paths cannot change the host's.
const HARDENING_SCRIPT: &str = "\
    echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c); \
    echo masks=$(grep -cE ' /proc/(kcore|keys|timer_list) | /sys/firmware ' /proc/self/mountinfo); \
    echo firmware=$(ls -A /sys/firmware | wc -l); \
    cat /proc/sys/kernel/core_pattern > /tmp/core_pattern; \
    (cat /tmp/core_pattern > /proc/sys/kernel/core_pattern) 2>/dev/null && echo core=written || echo core=refused; \
    mknod /dev/shm/blk b 8 0 2>/dev/null && echo blk=made || echo blk=refused; \
    mknod /dev/shm/mem c 1 1 2>/dev/null && echo mem=made || echo mem=refused; \
    mknod /dev/shm/null c 1 3 2>/dev/null && echo null-node=made || echo null-node=refused; \
    echo zero=$(head -c 4 /dev/zero | wc -c); \
    echo urandom=$(head -c 8 /dev/urandom | wc -c); \
    echo x > /dev/null && echo null=ok; \
    grep ' /dev ' /proc/self/mountinfo | sed 's/^/dev-mount=/'; \
    grep -E ' /proc/(sys|sysrq-trigger) ' /proc/self/mountinfo | sed 's/^/ro-mount=/'";

/// The options of the mountinfo line that follows `prefix` in `out`.
fn mount_options(out: &str, prefix: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.split_whitespace().nth(5).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn masks_readonly_paths_device_allow_list_and_dev_flags() {
    let env = TestEnv::new("harden");
    let spec = env.spec("c-harden", &["sh", "-c", HARDENING_SCRIPT]);
    let c = env.create(&spec);
    let (out, status) = run_to_end(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    );
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{out}");
    // The host's kernel decides which of them exist (a missing one is skipped).
    let present = |paths: &[&str]| paths.iter().filter(|p| Path::new(p).exists()).count();
    let masks = format!(
        "masks={}",
        present(&[
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/sys/firmware"
        ])
    );
    for want in [
        "kcore=0",
        masks.as_str(),
        "firmware=0",
        "core=refused",
        "blk=refused",
        "mem=refused",
        "null-node=made",
        "zero=4",
        "urandom=8",
        "null=ok",
    ] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    let dev = mount_options(&out, "dev-mount=");
    assert_eq!(dev.len(), 1, "{out}");
    for opt in ["nosuid", "noexec"] {
        assert!(dev[0].split(',').any(|o| o == opt), "{opt} in {dev:?}");
    }
    let ro = mount_options(&out, "ro-mount=");
    assert_eq!(
        ro.len(),
        present(&["/proc/sys", "/proc/sysrq-trigger"]),
        "/proc/sys and /proc/sysrq-trigger: {out}"
    );
    for opts in &ro {
        assert!(opts.split(',').any(|o| o == "ro"), "read-only: {opts}");
    }
    c.destroy();

    // With empty lists nothing is masked or read-only.
    let mut open = env.spec("c-open", &["sh", "-c", HARDENING_SCRIPT]);
    open.masked_paths.clear();
    open.readonly_paths.clear();
    let c = env.create(&open);
    let (out, _) = run_to_end(
        &c.get()
            .launch_plan(&open.process, LaunchKind::Main)
            .expect("plan"),
    );
    assert!(out.lines().any(|l| l == "masks=0"), "{out}");
    assert!(mount_options(&out, "ro-mount=").is_empty(), "{out}");
    assert!(
        out.lines().any(|l| l == "blk=refused"),
        "the device list does not depend on them: {out}"
    );
    c.destroy();
}

/// Detaches a mount made by a test when dropped.
struct MountGuard(PathBuf);

impl MountGuard {
    fn tmpfs(at: &Path) -> Self {
        std::fs::create_dir_all(at).expect("mkdir");
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount a tmpfs");
        Self(at.to_path_buf())
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn read_only_is_recursive_for_the_root_and_volumes() {
    let env = TestEnv::new("rro");
    let vol = env.dir.path().join("vol");
    let _root_sub = MountGuard::tmpfs(&Path::new(&env.rootfs()).join("sub"));
    let _vol_sub = MountGuard::tmpfs(&vol.join("sub"));
    let script = "touch /sub/x 2>/dev/null && echo root-sub=rw || echo root-sub=ro; \
         touch /vol/sub/x 2>/dev/null && echo vol-sub=rw || echo vol-sub=ro; \
         touch /vol/x 2>/dev/null && echo vol=rw || echo vol=ro; \
         touch /rw/x 2>/dev/null && echo rw=rw || echo rw=ro; \
         touch /dev/shm/x 2>/dev/null && echo shm=rw || echo shm=ro";
    let rw = env.dir.path().join("rw");
    std::fs::create_dir_all(&rw).expect("mkdir");
    let mut spec = env.spec("c-rro", &["sh", "-c", script]);
    spec.readonly_rootfs = true;
    spec.mounts = vec![
        Mount {
            source: vol.to_str().expect("utf-8").into(),
            destination: "/vol".into(),
            fstype: "bind".into(),
            options: vec!["rbind".into(), "ro".into()],
        },
        Mount {
            source: rw.to_str().expect("utf-8").into(),
            destination: "/rw".into(),
            fstype: "bind".into(),
            options: vec!["rbind".into()],
        },
    ];
    let c = env.create(&spec);
    let (out, _) = run_to_end(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    );
    for want in ["root-sub=ro", "vol-sub=ro", "vol=ro", "rw=rw", "shm=rw"] {
        assert!(
            out.lines().any(|l| l == want),
            "missing {want:?} in:\n{out}"
        );
    }
    c.destroy();
}

#[test]
fn exec_joins_the_namespaces_and_cgroup_of_the_main_process() {
    let env = TestEnv::new("exec");
    let spec = env.spec("c-exec", &["sh", "-c", "echo ready; exec sleep 1000"]);
    let c = env.create(&spec);
    let mut main = spawn(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    )
    .unwrap_or_else(|(e, _)| panic!("{e}"));
    assert_eq!(main.read_line(), "ready");
    let exec = LaunchKind::Exec {
        main_pid: main.pid.as_raw(),
    };

    let p = process(&[
        "sh",
        "-c",
        "echo pid=$$; hostname; cat /proc/1/cmdline; echo; grep '^0::' /proc/self/cgroup; \
         grep -qx $$ /sys/fs/cgroup/cgroup.procs && echo in-container-cgroup; exit 7",
    ]);
    let plan = c.get().launch_plan(&p, exec).expect("plan");
    assert!(plan.clone_flags().is_empty());
    let (out, status) = run_to_end(&plan);
    assert!(
        matches!(status, WaitStatus::Exited(_, 7)),
        "{status:?}\n{out}"
    );
    let pid: i32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .expect("pid line");
    assert!(pid > 1, "a pid of the container's namespace: {out}");
    assert!(out.lines().any(|l| l == "c-exec-host"), "{out}");
    assert!(
        out.replace('\0', " ").contains("sleep 1000"),
        "sees the main process as pid 1: {out}"
    );
    // The container's cgroup namespace (its root is the container's cgroup)
    // and the container's cgroup itself.
    assert!(out.lines().any(|l| l == "0::/"), "{out}");
    assert!(out.lines().any(|l| l == "in-container-cgroup"), "{out}");
    let host_view = std::fs::read_to_string(format!("/proc/{}/cgroup", main.pid.as_raw()))
        .expect("the main process's cgroup");
    assert!(
        host_view.contains(&format!("/{}/c-exec", env.paths.cgroup_parent)),
        "{host_view}"
    );

    // A signal sent to the process the agent knows reaches the real one, and it
    // ends the same way.
    let mut sleeper = spawn(
        &c.get()
            .launch_plan(&process(&["sleep", "1000"]), exec)
            .expect("plan"),
    )
    .unwrap_or_else(|(e, _)| panic!("{e}"));
    let deadline = Instant::now() + TIMEOUT;
    while c.get().pids().expect("pids").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the exec'ed sleep never showed up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(c.get().pids().expect("pids").contains(&main.pid.as_raw()));
    kill(sleeper.pid, Signal::SIGTERM).expect("kill");
    assert_eq!(
        sleeper.wait(),
        WaitStatus::Signaled(sleeper.pid, Signal::SIGTERM, false)
    );
    assert_eq!(sleeper.read_to_end(), "");

    // A failing exec reports through the grandchild's error pipe.
    let (e, status) = spawn(
        &c.get()
            .launch_plan(&process(&["/no/such/program"]), exec)
            .expect("plan"),
    )
    .map(|_| ())
    .expect_err("no such program");
    assert_eq!(
        (e.step(), e.errno()),
        (SetupStep::Exec, nix::errno::Errno::ENOENT)
    );
    assert!(matches!(status, WaitStatus::Exited(_, 127)), "{status:?}");

    // destroy kills the main process (cgroup.kill).
    c.destroy();
    assert!(matches!(
        main.wait(),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
    assert_eq!(main.read_to_end(), "");
}

#[test]
fn freeze_thaw_pids_and_stats() {
    let env = TestEnv::new("freeze");
    let spec = env.spec("c-freeze", &["sh", "-c", "echo ready; while :; do :; done"]);
    let c = env.create(&spec);
    let mut main = spawn(
        &c.get()
            .launch_plan(&spec.process, LaunchKind::Main)
            .expect("plan"),
    )
    .unwrap_or_else(|(e, _)| panic!("{e}"));
    assert_eq!(main.read_line(), "ready");
    assert_eq!(c.get().pids().expect("pids"), vec![main.pid.as_raw()]);

    c.get().freeze(true).expect("freeze");
    let events = std::fs::read_to_string(c.get().cgroup_dir().join("cgroup.events")).expect("read");
    assert!(events.contains("frozen 1"), "{events}");
    let before = c.get().stats().expect("stats").cpu_usage_us;
    std::thread::sleep(Duration::from_millis(300));
    let frozen_use = c.get().stats().expect("stats").cpu_usage_us - before;
    // A running busy loop would use about 300 000 us.
    assert!(
        frozen_use < 30_000,
        "frozen, yet {frozen_use} us of CPU used"
    );

    c.get().freeze(false).expect("thaw");
    let before = c.get().stats().expect("stats").cpu_usage_us;
    let deadline = Instant::now() + TIMEOUT;
    while c.get().stats().expect("stats").cpu_usage_us < before + 50_000 {
        assert!(Instant::now() < deadline, "thawed, but no CPU used");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Frozen processes are killed too.
    c.get().freeze(true).expect("freeze");
    c.destroy();
    assert!(matches!(
        main.wait(),
        WaitStatus::Signaled(_, Signal::SIGKILL, _)
    ));
}

#[test]
fn setup_failures_come_back_with_their_step() {
    let env = TestEnv::new("fail");
    let spec = env.spec("c-fail", &["true"]);
    let c = env.create(&spec);
    let (e, status) = spawn(
        &c.get()
            .launch_plan(&process(&["nope"]), LaunchKind::Main)
            .expect("plan"),
    )
    .map(|_| ())
    .expect_err("no such program");
    assert_eq!(
        (e.step(), e.errno()),
        (SetupStep::Exec, nix::errno::Errno::ENOENT)
    );
    assert!(e.is_exec());
    assert!(matches!(status, WaitStatus::Exited(_, 127)));

    let mut p = process(&["sh", "-c", "true"]);
    p.cwd = "/no/such/dir".into();
    let (e, _) = spawn(&c.get().launch_plan(&p, LaunchKind::Main).expect("plan"))
        .map(|_| ())
        .expect_err("no such cwd");
    assert_eq!(
        (e.step(), e.errno()),
        (SetupStep::Cwd, nix::errno::Errno::ENOENT)
    );
    c.destroy();
}

#[test]
fn destroy_and_failed_creates_leave_nothing() {
    let env = TestEnv::new("clean");
    let spec = env.spec("c-clean", &["true"]);
    let c = env.create(&spec);
    let root = c.get().root().to_path_buf();
    let cgroup = c.get().cgroup_dir().to_path_buf();
    assert!(is_mounted(&root));
    assert!(cgroup.is_dir());
    let again = Container::create_in(&spec, &env.paths).expect_err("same id");
    assert!(matches!(again, ContainerError::Exists(_)), "{again}");
    c.destroy();
    assert!(!is_mounted(&root));
    assert!(!cgroup.exists());
    assert!(!env.paths.state_dir.join("c-clean").exists());

    // Fails after the rootfs is mounted: a mount destination that resolves to
    // the root of the container.
    std::os::unix::fs::symlink("/", Path::new(&env.rootfs()).join("toroot")).expect("symlink");
    let mut bad = env.spec("c-bad", &["true"]);
    bad.mounts = vec![Mount {
        source: "tmpfs".into(),
        destination: "/toroot".into(),
        fstype: "tmpfs".into(),
        options: vec![],
    }];
    let err = Container::create_in(&bad, &env.paths).expect_err("resolves to the root");
    assert!(matches!(err, ContainerError::InvalidMount { .. }), "{err}");
    let dir = env.paths.state_dir.join("c-bad");
    assert!(!is_mounted(&dir.join("root")));
    assert!(!dir.exists());
    assert!(!env
        .paths
        .cgroup_root
        .join(&env.paths.cgroup_parent)
        .join("c-bad")
        .exists());

    let mut missing = env.spec("c-missing", &["true"]);
    missing.rootfs = Rootfs::Path("/nonexistent/vc-rootfs".into());
    assert!(matches!(
        Container::create_in(&missing, &env.paths),
        Err(ContainerError::RootfsMissing(_))
    ));
    assert!(!env.paths.state_dir.join("c-missing").exists());
}

#[test]
fn host_processes_run_outside_containers() {
    require_root();
    let mut p = process(&["sh", "-c", "echo uid=$(id -u); pwd; echo $X"]);
    p.env = vec!["X=y".into(), format!("PATH={}", plan::DEFAULT_PATH)];
    p.cwd = "/tmp".into();
    p.user.uid = 65534;
    p.user.gid = 65534;
    let plan = LaunchPlan::host(&p).expect("plan");
    let (out, status) = run_to_end(&plan);
    assert!(matches!(status, WaitStatus::Exited(_, 0)), "{out}");
    assert_eq!(out, "uid=65534\n/tmp\ny\n");
}
