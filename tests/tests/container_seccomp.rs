//! Seccomp in real pod VMs: the default profile denies what Docker's denies
//! (creating a user namespace without `CAP_SYS_ADMIN` fails with `EPERM`) and
//! shows as `Seccomp: 2` for the main process and for an exec; `unconfined`
//! allows the same call and shows `Seccomp: 0`; a custom OCI profile that
//! denies `mkdir` works; an invalid profile is refused before anything is
//! created; virtc reads a profile file with `--seccomp PATH` and refuses an
//! invalid one before it makes anything.

mod support;

use std::time::Duration;

use anyhow::{Context as _, Result};
use support::pod::TestRuntime;
use vc_host::config::{ConfigError, Seccomp, SeccompProfile};
use vc_host::runtime::{ProcessConfig, RuntimeError};

/// Prints the seccomp mode of the shell itself, then tries to create a user
/// namespace. Root in a container without `CAP_SYS_ADMIN` may do that as far
/// as the kernel goes; the default profile denies `unshare` (and `clone` with
/// namespace flags) without that capability.
const PROBE: &str = "grep '^Seccomp:' /proc/self/status; unshare -U true 2>&1; echo unshare=$?";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_unconfined_custom_and_refused_profiles() -> Result<()> {
    let t = TestRuntime::new()?;
    let pod = t.pod("seccomp").id;
    t.rt.run_pod(t.pod("seccomp")).await?;

    // Default: the main process is filtered and the user namespace is denied.
    let out = t
        .run_container(&pod, t.container("dflt", &["/bin/sh", "-c", PROBE]))
        .await?;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("Seccomp:\t2\n"), "{stdout}");
    assert!(stdout.contains("Operation not permitted"), "{stdout}");
    assert!(stdout.contains("unshare=1"), "{stdout}");

    // An exec in a default container is filtered too.
    let sleeper = t.container("sleeper", &["/bin/sleep", "1000"]);
    t.rt.create_container(&pod, sleeper).await?;
    let sleeper = "sleeper".parse()?;
    t.rt.start_container(&pod, &sleeper).await?;
    let exec =
        t.rt.exec_process(&pod, &sleeper, ProcessConfig::new(["/bin/sh", "-c", PROBE]))
            .await?;
    let out = tokio::time::timeout(Duration::from_secs(60), exec.output())
        .await
        .context("the exec did not finish")??;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("Seccomp:\t2\n"), "{stdout}");
    assert!(stdout.contains("unshare=1"), "{stdout}");
    t.rt.stop_container(&pod, &sleeper, Duration::from_millis(100))
        .await?;

    // Unconfined: the same call succeeds, and there is no filter.
    let mut open = t.container("open", &["/bin/sh", "-c", PROBE]);
    open.seccomp = Seccomp::Unconfined;
    let out = t.run_container(&pod, open).await?;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert!(stdout.contains("Seccomp:\t0\n"), "{stdout}");
    assert!(stdout.contains("unshare=0"), "{stdout}");

    // A custom OCI profile: everything allowed but mkdir, which fails with
    // EOPNOTSUPP; the user namespace is allowed by this profile.
    let profile: SeccompProfile = serde_json::from_str(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"],
                          "action": "SCMP_ACT_ERRNO", "errnoRet": 95}]}"#,
    )?;
    let mut custom = t.container(
        "custom",
        &[
            "/bin/sh",
            "-c",
            "mkdir /tmp/d 2>&1; echo mkdir=$?; unshare -U true; echo unshare=$?; \
             grep '^Seccomp:' /proc/self/status",
        ],
    );
    custom.seccomp = Seccomp::Profile(profile);
    let out = t.run_container(&pod, custom).await?;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("not supported"), "{stdout}");
    assert!(stdout.contains("mkdir=1"), "{stdout}");
    assert!(stdout.contains("unshare=0"), "{stdout}");
    assert!(stdout.contains("Seccomp:\t2\n"), "{stdout}");

    // An invalid profile (argument index 7) is refused by the host, naming
    // the field, before anything exists for the container.
    let mounts_before = t.leftover_mounts();
    let bad: SeccompProfile = serde_json::from_str(
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 7, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
    )?;
    let mut refused = t.container("refused", &["/bin/true"]);
    refused.seccomp = Seccomp::Profile(bad);
    let err =
        t.rt.create_container(&pod, refused)
            .await
            .expect_err("an argument index of 7 is refused");
    match &err {
        RuntimeError::Config(ConfigError::Seccomp(e)) => {
            assert_eq!(e.field, "syscalls[0].args[0].index", "{e}");
        }
        other => panic!("unexpected error: {other:?}"),
    }
    let status = t.rt.container_status(&pod, &"refused".parse()?).await;
    assert!(
        matches!(status, Err(RuntimeError::ContainerNotFound { .. })),
        "{status:?}"
    );
    assert_eq!(t.leftover_mounts(), mounts_before);

    t.rt.stop_pod(&pod).await?;
    t.rt.delete_pod(&pod).await?;
    assert!(t.leftover_pods().is_empty());
    Ok(())
}

#[test]
fn virtc_takes_a_profile_file_and_refuses_an_invalid_one() -> Result<()> {
    let t = TestRuntime::new()?;
    let v = support::virtc::Virtc::new(t.root(), &t.image.dir)?;
    let rootfs = t.rootfs.to_str().context("rootfs path is UTF-8")?;
    let dir = tempfile::tempdir()?;

    // Refused while the command line is read: no pod, no VM.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}"#,
    )?;
    let bad = bad.to_str().context("UTF-8 path")?;
    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--seccomp",
        bad,
        "--",
        "/bin/true",
    ])?;
    assert_ne!(ran.code, Some(0), "{ran}");
    assert!(ran.stderr.contains("syscalls[0].action"), "{ran}");
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());

    // A valid profile file applies.
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "errnoRet": 95}]}"#,
    )?;
    let good = good.to_str().context("UTF-8 path")?;
    let ran = v.run([
        "run",
        "--rootfs",
        rootfs,
        "--seccomp",
        good,
        "--",
        "/bin/sh",
        "-c",
        "mkdir /tmp/d; echo mkdir=$?",
    ])?;
    assert_eq!(ran.code, Some(0), "{ran}");
    assert!(ran.stdout.contains("mkdir=1"), "{ran}");
    assert!(ran.stderr.contains("not supported"), "{ran}");
    assert!(t.leftover_pods().is_empty(), "{:?}", t.leftover_pods());
    Ok(())
}
