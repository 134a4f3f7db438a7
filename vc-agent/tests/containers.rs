//! The container state machine through the protocol, with real containers on
//! the host (root and a cgroup2 mount needed, as the agent has in the guest): a
//! busybox rootfs in a temporary directory, a cgroup parent of the test's own,
//! every container removed at the end (and the cgroup parent by a guard).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{attach, connect, read_all, Client};
use tokio::io::AsyncReadExt;
use vc_agent::container::ContainerPaths;
use vc_agent::{Agent, AgentOptions};
use vc_proto::{
    ContainerSpec, ContainerStatus, ErrorCode, Event, ProcessRef, ProcessSpec, ProcessState,
    Request, Resources, Response, Rootfs, Seccomp, SeccompAction, SeccompProfile, SeccompSyscall,
    StreamKind,
};

const BUSYBOX: &str = "/usr/bin/busybox";

/// A cgroup2 mount: `/sys/fs/cgroup`, or the `unified` one of a hybrid host.
fn cgroup2_root() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            right
                .starts_with("cgroup2 ")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .expect("no cgroup2 mount: mount one (mount -t cgroup2 none /sys/fs/cgroup)")
}

fn busybox_rootfs(dir: &Path) {
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} is missing: install busybox-static with `cargo xtask deps`"
    );
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).expect("mkdir");
    }
    std::fs::copy(BUSYBOX, dir.join("bin/busybox")).expect("copy busybox");
    for applet in ["sh", "sleep", "hostname", "cat", "true"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).expect("symlink");
    }
}

/// One busybox rootfs for every test of this process, made before any of them
/// forks: a copy still open for writing while another test forks would be
/// inherited by that child until its exec, and executing the copy would then
/// fail with ETXTBSY.
fn shared_rootfs() -> &'static Path {
    static ROOTFS: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            busybox_rootfs(dir.path());
            dir
        })
        .path()
}

/// The agent, its temporary directory and cgroup parent (removed on drop).
struct Env {
    agent: Arc<Agent>,
    dir: tempfile::TempDir,
    cgroup_parent: PathBuf,
}

impl Drop for Env {
    /// After a failed assertion containers may be left: kill their processes,
    /// detach their root mounts, remove their cgroups.
    fn drop(&mut self) {
        if let Ok(children) = std::fs::read_dir(&self.cgroup_parent) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let procs = std::fs::read_to_string(child.path().join("cgroup.procs"));
                for pid in procs.unwrap_or_default().split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                for _ in 0..100 {
                    if std::fs::remove_dir(child.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let _ = std::fs::remove_dir(&self.cgroup_parent);
        if let Ok(containers) = std::fs::read_dir(self.dir.path().join("run/containers")) {
            for container in containers.flatten() {
                let _ = nix::mount::umount2(
                    &container.path().join("root"),
                    nix::mount::MntFlags::MNT_DETACH,
                );
            }
        }
    }
}

fn env() -> Env {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the container tests need root (mounts, namespaces, cgroups)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    shared_rootfs();
    let mut options = AgentOptions::process(dir.path().join("run"));
    std::fs::create_dir_all(&options.run_dir).expect("run dir");
    static ENVS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = ENVS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let parent = format!("vc-agent-test-{}-{n}", std::process::id());
    options.containers = ContainerPaths {
        cgroup_root: cgroup2_root(),
        cgroup_parent: parent.clone(),
        ..options.containers
    };
    let cgroup_parent = options.containers.cgroup_root.join(parent);
    let agent = Agent::new(options).expect("agent");
    Env {
        agent,
        dir,
        cgroup_parent,
    }
}

fn spec(id: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        id: id.into(),
        rootfs: Rootfs::Path(shared_rootfs().display().to_string()),
        readonly_rootfs: false,
        hostname: format!("{id}-host"),
        process: ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            cwd: "/".into(),
            ..ProcessSpec::default()
        },
        mounts: vec![],
        resources: Resources::default(),
        masked_paths: vc_proto::DEFAULT_MASKED_PATHS.map(String::from).to_vec(),
        readonly_paths: vc_proto::DEFAULT_READONLY_PATHS.map(String::from).to_vec(),
    }
}

fn main_of(id: &str) -> ProcessRef {
    ProcessRef {
        container_id: id.into(),
        exec_id: None,
    }
}

async fn state(client: &mut Client, id: &str) -> ContainerStatus {
    match client
        .call(Request::ContainerState {
            container_id: id.into(),
        })
        .await
    {
        Response::ContainerStatus(status) => status,
        other => panic!("state answered {other:?}"),
    }
}

fn wrong_state(response: Response, words: &[&str]) {
    let Response::Error(e) = response else {
        panic!("expected WrongState, got {response:?}");
    };
    assert_eq!(e.code, ErrorCode::WrongState, "{}", e.message);
    for word in words {
        assert!(e.message.contains(word), "{:?} lacks {word:?}", e.message);
    }
}

#[tokio::test]
async fn lifecycle_exec_pause_stop_remove() {
    let env = env();
    let mut client = connect(&env.agent).await;
    let id = "life";
    let create = Request::CreateContainer(spec(id, "echo main in $(hostname); exec sleep 60"));
    assert_eq!(client.call(create.clone()).await, Response::Ok);
    let again = client.call(create).await;
    assert!(matches!(again, Response::Error(e) if e.code == ErrorCode::AlreadyExists));
    assert_eq!(state(&mut client, id).await.state, ProcessState::Created);
    let stop_created = client
        .call(Request::StopContainer {
            container_id: id.into(),
            grace_ms: 10,
        })
        .await;
    wrong_state(stop_created, &["created", "running"]);

    let start = Request::StartContainer {
        container_id: id.into(),
    };
    let started = client.call(start.clone()).await;
    let Response::Pid(pid) = started else {
        panic!("start answered {started:?}");
    };
    let status = state(&mut client, id).await;
    assert_eq!(
        (status.state, status.pid),
        (ProcessState::Running, Some(pid))
    );
    wrong_state(client.call(start.clone()).await, &["running", "created"]);
    let mut out = attach(&env.agent, main_of(id), StreamKind::Stdout)
        .await
        .expect("main stdout");
    // Let the main process print before pausing and stopping it.
    let mut first = [0u8; 64];
    let mut got = 0;
    while !first[..got].contains(&b'\n') {
        let n = tokio::time::timeout(Duration::from_secs(10), out.read(&mut first[got..]))
            .await
            .expect("main prints within 10 s")
            .expect("read");
        assert!(n > 0, "main stdout ended early");
        got += n;
    }
    assert_eq!(&first[..got], b"main in life-host\n");
    let reader = tokio::spawn(read_all(out));

    // An exec joins the container: its hostname, its PID namespace.
    let exec_ref = ProcessRef {
        container_id: id.into(),
        exec_id: Some("e1".into()),
    };
    let exec = Request::Exec {
        process: exec_ref.clone(),
        spec: ProcessSpec {
            args: vec![
                "/bin/sh".into(),
                "-c".into(),
                "hostname; cat /proc/1/cmdline".into(),
            ],
            cwd: "/".into(),
            ..ProcessSpec::default()
        },
    };
    assert!(matches!(client.call(exec.clone()).await, Response::Pid(_)));
    let exec_out = attach(&env.agent, exec_ref.clone(), StreamKind::Stdout)
        .await
        .expect("exec stdout");
    let text = String::from_utf8_lossy(&read_all(exec_out).await).into_owned();
    // PID 1 is the main process: `sh`, or `sleep` once it has exec'd.
    assert!(
        text.starts_with("life-host\n") && text.contains("sleep"),
        "{text:?}"
    );
    assert_eq!(
        client.call(Request::Wait { process: exec_ref }).await,
        Response::Exited(0)
    );
    // The exec has exited: the cgroup holds the main process alone.
    let pids = Request::ContainerPids {
        container_id: id.into(),
    };
    assert_eq!(client.call(pids).await, Response::Pids(vec![pid]));
    let missing = client
        .call(Request::ContainerPids {
            container_id: "nope".into(),
        })
        .await;
    assert!(matches!(missing, Response::Error(e) if e.code == ErrorCode::NotFound));

    let pause = Request::PauseContainer {
        container_id: id.into(),
    };
    assert_eq!(client.call(pause.clone()).await, Response::Ok);
    assert_eq!(state(&mut client, id).await.state, ProcessState::Paused);
    wrong_state(client.call(pause).await, &["paused", "running"]);
    let exec_paused = Request::Exec {
        process: ProcessRef {
            container_id: id.into(),
            exec_id: Some("e2".into()),
        },
        spec: ProcessSpec {
            args: vec!["/bin/true".into()],
            ..ProcessSpec::default()
        },
    };
    wrong_state(client.call(exec_paused).await, &["paused", "running"]);
    let remove = Request::RemoveContainer {
        container_id: id.into(),
    };
    wrong_state(client.call(remove.clone()).await, &["paused", "stopped"]);
    assert_eq!(
        client
            .call(Request::ResumeContainer {
                container_id: id.into()
            })
            .await,
        Response::Ok
    );

    // `sleep` as the container's PID 1 ignores SIGTERM: the grace runs out.
    let stop = Request::StopContainer {
        container_id: id.into(),
        grace_ms: 200,
    };
    assert_eq!(client.call(stop.clone()).await, Response::Exited(137));
    assert_eq!(client.call(stop).await, Response::Exited(137));
    let status = state(&mut client, id).await;
    assert_eq!(
        (status.state, status.exit_code),
        (ProcessState::Stopped, Some(137))
    );
    let rest = reader.await.expect("reader");
    assert_eq!(rest, b"", "nothing after the first line");
    wrong_state(client.call(start).await, &["stopped", "created"]);

    assert_eq!(client.call(remove.clone()).await, Response::Ok);
    let gone = client.call(remove).await;
    assert!(matches!(gone, Response::Error(e) if e.code == ErrorCode::NotFound));
    assert!(!env.dir.path().join("run/containers").join(id).exists());
}

#[tokio::test]
async fn main_exit_is_recorded_and_reported_as_an_event() {
    let env = env();
    let mut client = connect(&env.agent).await;
    let id = "quick";
    assert_eq!(
        client
            .call(Request::CreateContainer(spec(id, "exit 5")))
            .await,
        Response::Ok
    );
    assert!(matches!(
        client
            .call(Request::StartContainer {
                container_id: id.into()
            })
            .await,
        Response::Pid(_)
    ));
    assert_eq!(
        client
            .call(Request::Wait {
                process: main_of(id)
            })
            .await,
        Response::Exited(5)
    );
    let event = tokio::time::timeout(Duration::from_secs(10), client.call(Request::NextEvent))
        .await
        .expect("event");
    assert_eq!(
        event,
        Response::Event(Event::Exited {
            process: main_of(id),
            code: 5
        })
    );
    // The state follows the exit without a stop.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = state(&mut client, id).await;
        if status.state == ProcessState::Stopped {
            assert_eq!(status.exit_code, Some(5));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        client
            .call(Request::RemoveContainer {
                container_id: id.into()
            })
            .await,
        Response::Ok
    );
}

#[tokio::test]
async fn signal_all_and_a_failed_start_leaves_it_created() {
    let env = env();
    let mut client = connect(&env.agent).await;
    let id = "sig";
    let mut broken = spec(id, "");
    broken.process.args = vec!["/bin/no-such-program".into()];
    assert_eq!(
        client.call(Request::CreateContainer(broken)).await,
        Response::Ok
    );
    let start = Request::StartContainer {
        container_id: id.into(),
    };
    let failed = client.call(start.clone()).await;
    assert!(
        matches!(&failed, Response::Error(e) if e.code == ErrorCode::ExecFailed && e.message.contains("/bin/no-such-program")),
        "{failed:?}"
    );
    assert_eq!(state(&mut client, id).await.state, ProcessState::Created);
    assert_eq!(
        client
            .call(Request::RemoveContainer {
                container_id: id.into()
            })
            .await,
        Response::Ok
    );

    let id = "sig2";
    let script = "trap 'echo term; exit 9' TERM; sleep 60 & wait";
    assert_eq!(
        client
            .call(Request::CreateContainer(spec(id, script)))
            .await,
        Response::Ok
    );
    assert!(matches!(
        client
            .call(Request::StartContainer {
                container_id: id.into()
            })
            .await,
        Response::Pid(_)
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signal = Request::Signal {
        process: main_of(id),
        signal: libc::SIGTERM,
        all: true,
    };
    assert_eq!(client.call(signal).await, Response::Ok);
    assert_eq!(
        client
            .call(Request::Wait {
                process: main_of(id)
            })
            .await,
        Response::Exited(9)
    );
    assert_eq!(
        client
            .call(Request::RemoveContainer {
                container_id: id.into()
            })
            .await,
        Response::Ok
    );
}

/// Creates `id` running `script` with `seccomp`, and starts it.
async fn start_with_seccomp(client: &mut Client, id: &str, seccomp: Seccomp, script: &str) {
    let create = Request::CreateContainerV2 {
        spec: spec(id, script),
        seccomp,
    };
    assert_eq!(client.call(create).await, Response::Ok);
    let started = client
        .call(Request::StartContainer {
            container_id: id.into(),
        })
        .await;
    assert!(matches!(started, Response::Pid(_)), "{started:?}");
}

/// Creates `id` with `seccomp`, starts it, and returns what its main process
/// printed and its exit code; the container is removed.
async fn run_with_seccomp(env: &Env, id: &str, seccomp: Seccomp, script: &str) -> (String, i32) {
    let mut client = connect(&env.agent).await;
    start_with_seccomp(&mut client, id, seccomp, script).await;
    let out = attach(&env.agent, main_of(id), StreamKind::Stdout)
        .await
        .expect("main stdout");
    let text = String::from_utf8_lossy(&read_all(out).await).into_owned();
    let Response::Exited(code) = client
        .call(Request::Wait {
            process: main_of(id),
        })
        .await
    else {
        panic!("wait failed");
    };
    let removed = client
        .call(Request::RemoveContainer {
            container_id: id.into(),
        })
        .await;
    assert_eq!(removed, Response::Ok);
    (text, code)
}

/// The seccomp line of `/proc/self/status` and whether a user namespace could
/// be made (the default profile denies `unshare` without `CAP_SYS_ADMIN`).
const SECCOMP_PROBE: &str = "/bin/busybox grep '^Seccomp:' /proc/self/status; \
    /bin/busybox unshare -U /bin/true 2>&1; echo unshare=$?";

#[tokio::test]
async fn seccomp_default_unconfined_and_a_custom_profile() {
    let env = env();
    let (text, code) = run_with_seccomp(&env, "sc-default", Seccomp::Default, SECCOMP_PROBE).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Seccomp:\t2\n"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert!(text.contains("unshare=1"), "{text}");

    let (text, code) =
        run_with_seccomp(&env, "sc-unconfined", Seccomp::Unconfined, SECCOMP_PROBE).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("Seccomp:\t0\n"), "{text}");
    assert!(text.contains("unshare=0"), "{text}");

    // A profile that allows everything but mkdir, refused with EOPNOTSUPP.
    let profile = SeccompProfile {
        default_action: SeccompAction::Allow,
        default_errno_ret: None,
        architectures: vec!["SCMP_ARCH_X86_64".into()],
        flags: vec![],
        syscalls: vec![SeccompSyscall {
            names: vec!["mkdir".into(), "mkdirat".into()],
            action: SeccompAction::Errno,
            errno_ret: Some(libc::EOPNOTSUPP as u32),
            args: vec![],
        }],
    };
    let script = "/bin/busybox mkdir /tmp/d 2>&1; echo mkdir=$?; \
                  /bin/busybox unshare -U /bin/true; echo unshare=$?";
    let (text, code) = run_with_seccomp(&env, "sc-custom", Seccomp::Profile(profile), script).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("not supported"), "{text}");
    assert!(text.contains("mkdir=1"), "{text}");
    assert!(text.contains("unshare=0"), "{text}");
}

#[tokio::test]
async fn seccomp_applies_to_execs_and_bad_profiles_are_refused_at_create() {
    let env = env();
    let mut client = connect(&env.agent).await;
    let id = "sc-exec";
    start_with_seccomp(&mut client, id, Seccomp::Default, "exec /bin/sleep 60").await;
    let exec_ref = ProcessRef {
        container_id: id.into(),
        exec_id: Some("probe".into()),
    };
    let exec = Request::Exec {
        process: exec_ref.clone(),
        spec: ProcessSpec {
            args: vec!["/bin/sh".into(), "-c".into(), SECCOMP_PROBE.into()],
            cwd: "/".into(),
            no_new_privileges: true,
            ..ProcessSpec::default()
        },
    };
    assert!(matches!(client.call(exec).await, Response::Pid(_)));
    let out = attach(&env.agent, exec_ref.clone(), StreamKind::Stdout)
        .await
        .expect("exec stdout");
    let text = String::from_utf8_lossy(&read_all(out).await).into_owned();
    assert!(text.contains("Seccomp:\t2\n"), "{text}");
    assert!(text.contains("unshare=1"), "{text}");
    assert_eq!(
        client.call(Request::Wait { process: exec_ref }).await,
        Response::Exited(0)
    );
    let stop = Request::StopContainer {
        container_id: id.into(),
        grace_ms: 100,
    };
    assert!(matches!(client.call(stop).await, Response::Exited(_)));
    let remove = Request::RemoveContainer {
        container_id: id.into(),
    };
    assert_eq!(client.call(remove).await, Response::Ok);

    // A profile the agent refuses: nothing is created.
    let bad = SeccompProfile {
        default_action: SeccompAction::Notify,
        default_errno_ret: None,
        architectures: vec![],
        flags: vec![],
        syscalls: vec![],
    };
    let refused = client
        .call(Request::CreateContainerV2 {
            spec: spec("sc-bad", "true"),
            seccomp: Seccomp::Profile(bad),
        })
        .await;
    assert!(
        matches!(&refused, Response::Error(e) if e.code == ErrorCode::InvalidArgument
            && e.message.contains("defaultAction")),
        "{refused:?}"
    );
    assert!(!env.dir.path().join("run/containers/sc-bad").exists());
    assert!(!env.cgroup_parent.join("sc-bad").exists());
}
