//! The translation checked by running the compiled filters in a small
//! classic-BPF interpreter, combined the way the kernel combines stacked
//! filters.

use super::*;
use caps::Capability;
use vc_proto::SeccompSyscall;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

/// `struct seccomp_data` as the filter reads it: nr, arch, ip, args.
fn data(nr: u32, arch: u32, args: [u64; 6]) -> [u8; 64] {
    let mut d = [0u8; 64];
    d[0..4].copy_from_slice(&nr.to_ne_bytes());
    d[4..8].copy_from_slice(&arch.to_ne_bytes());
    for (i, a) in args.iter().enumerate() {
        d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
    }
    d
}

/// Runs one filter: the instructions seccompiler and `x32_guard` emit.
fn run(prog: &[libc::sock_filter], d: &[u8; 64]) -> u32 {
    let (mut a, mut pc) = (0u32, 0usize);
    loop {
        let i = &prog[pc];
        let code = u32::from(i.code);
        pc += 1;
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                let k = i.k as usize;
                a = u32::from_ne_bytes(d[k..k + 4].try_into().expect("4 bytes"));
            }
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= i.k,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += i.k as usize,
            c if c & 0x07 == libc::BPF_JMP => {
                let taken = match c & 0xf0 {
                    x if x == libc::BPF_JEQ => a == i.k,
                    x if x == libc::BPF_JGT => a > i.k,
                    x if x == libc::BPF_JGE => a >= i.k,
                    x if x == libc::BPF_JSET => a & i.k != 0,
                    other => panic!("jump {other:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            c if c == libc::BPF_RET | libc::BPF_K => return i.k,
            other => panic!("instruction {other:#x}"),
        }
    }
}

/// The kernel's answer for stacked filters: the strictest action; among equal
/// actions, the most recently installed filter's.
fn verdict(plan: &SeccompPlan, nr: i64, arch: u32, args: [u64; 6]) -> u32 {
    let d = data(nr as u32, arch, args);
    let mut best: Option<u32> = None;
    for f in plan.filters.iter().rev() {
        let r = run(f, &d);
        let strict = |x: u32| (x & libc::SECCOMP_RET_ACTION_FULL) as i32;
        if best.is_none_or(|b| strict(r) < strict(b)) {
            best = Some(r);
        }
    }
    best.expect("at least one filter")
}

fn nr(name: &str) -> i64 {
    table::number(name).expect(name)
}

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

fn x86(plan: &SeccompPlan, name: &str, args: [u64; 6]) -> u32 {
    verdict(plan, nr(name), AUDIT_ARCH_X86_64, args)
}

fn default_caps() -> u64 {
    super::super::caps::keep_mask(None).expect("default set")
}

#[test]
fn every_default_name_is_an_x86_64_system_call() {
    for name in default::ALLOWED
        .iter()
        .chain(default::BY_CAPABILITY.iter().flat_map(|(_, n)| n.iter()))
    {
        assert!(table::number(name).is_some(), "{name}");
    }
}

#[test]
fn default_profile_allows_the_list_and_denies_the_rest_with_eperm() {
    let plan = plan(&Seccomp::Default, default_caps())
        .expect("compiles")
        .expect("a filter");
    for name in [
        "read",
        "execve",
        "openat",
        "mkdir",
        "capset",
        "arch_prctl",
        "chroot",
        "ptrace",
    ] {
        assert_eq!(x86(&plan, name, [0; 6]), ALLOW, "{name}");
    }
    // Not in the list, or needing a capability the default set lacks.
    for name in [
        "keyctl",
        "add_key",
        "unshare",
        "mount",
        "setns",
        "kexec_load",
        "bpf",
        "reboot",
        "init_module",
        "userfaultfd",
        "pivot_root",
        "swapon",
        "open_by_handle_at",
    ] {
        assert_eq!(x86(&plan, name, [0; 6]), errno(libc::EPERM), "{name}");
    }
    // clone: allowed without namespace flags only.
    let fork_flags = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | 17;
    assert_eq!(x86(&plan, "clone", [fork_flags, 0, 0, 0, 0, 0]), ALLOW);
    for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
        assert_eq!(
            x86(&plan, "clone", [fork_flags | ns as u64, 0, 0, 0, 0, 0]),
            errno(libc::EPERM),
            "{ns:#x}"
        );
    }
    // clone3: ENOSYS, so that libc falls back to clone.
    assert_eq!(x86(&plan, "clone3", [0; 6]), errno(libc::ENOSYS));
    // personality: the listed values only; socket: Docker's families, not
    // AF_ALG or AF_VSOCK.
    assert_eq!(x86(&plan, "personality", [0x20008, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        x86(&plan, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        x86(&plan, "personality", [0x0040_0000, 0, 0, 0, 0, 0]),
        errno(libc::EPERM),
        "READ_IMPLIES_EXEC"
    );
    for family in [
        libc::AF_UNIX,
        libc::AF_INET,
        libc::AF_INET6,
        libc::AF_NETLINK,
        libc::AF_PACKET,
        45,
    ] {
        assert_eq!(
            x86(&plan, "socket", [family as u64, 0, 0, 0, 0, 0]),
            ALLOW,
            "{family}"
        );
    }
    for family in [libc::AF_DECnet, libc::AF_ALG, libc::AF_VSOCK, 46] {
        assert_eq!(
            x86(&plan, "socket", [family as u64, 0, 0, 0, 0, 0]),
            errno(libc::EPERM),
            "{family}"
        );
    }
}

#[test]
fn default_profile_follows_the_capabilities() {
    let admin = default_caps() | Capability::CAP_SYS_ADMIN.bitmask();
    let admin = plan(&Seccomp::Default, admin)
        .expect("compiles")
        .expect("a filter");
    for name in ["unshare", "mount", "setns", "clone3", "umount2"] {
        assert_eq!(x86(&admin, name, [0; 6]), ALLOW, "{name}");
    }
    let ns = libc::CLONE_NEWUSER as u64;
    assert_eq!(x86(&admin, "clone", [ns, 0, 0, 0, 0, 0]), ALLOW);

    let ptrace = plan(&Seccomp::Default, Capability::CAP_SYS_PTRACE.bitmask())
        .expect("compiles")
        .expect("a filter");
    assert_eq!(x86(&ptrace, "kcmp", [0; 6]), ALLOW);
    assert_eq!(
        x86(&ptrace, "chroot", [0; 6]),
        errno(libc::EPERM),
        "no CAP_SYS_CHROOT"
    );
}

#[test]
fn other_abis_are_killed() {
    let plan = plan(&Seccomp::Default, default_caps())
        .expect("compiles")
        .expect("a filter");
    // i386 `getpid` is 20.
    assert_eq!(verdict(&plan, 20, AUDIT_ARCH_I386, [0; 6]), KILL_PROCESS);
    // x32 `read`.
    assert_eq!(
        verdict(&plan, 0x4000_0000, AUDIT_ARCH_X86_64, [0; 6]),
        KILL_PROCESS
    );
}

fn profile(default_action: SeccompAction, syscalls: Vec<SeccompSyscall>) -> SeccompProfile {
    SeccompProfile {
        default_action,
        default_errno_ret: None,
        architectures: vec![],
        flags: vec![],
        syscalls,
    }
}

fn rule(names: &[&str], action: SeccompAction, errno_ret: Option<u32>) -> SeccompSyscall {
    SeccompSyscall {
        names: names.iter().map(|s| s.to_string()).collect(),
        action,
        errno_ret,
        args: vec![],
    }
}

#[test]
fn custom_profiles_translate_actions_and_conditions() {
    let mut kill_big_writes = rule(&["write"], SeccompAction::KillProcess, None);
    kill_big_writes.args.push(SeccompArg {
        index: 2,
        value: 1 << 40,
        value_two: 0,
        op: SeccompOp::GreaterThan,
    });
    let mut masked = rule(&["openat"], SeccompAction::Trap, None);
    masked.args.push(SeccompArg {
        index: 2,
        value: libc::O_CREAT as u64,
        value_two: libc::O_CREAT as u64,
        op: SeccompOp::MaskedEqual,
    });
    let p = profile(
        SeccompAction::Allow,
        vec![
            rule(
                &["mkdir", "mkdirat", "no_such_call"],
                SeccompAction::Errno,
                Some(95),
            ),
            rule(&["getpid"], SeccompAction::Errno, None),
            kill_big_writes,
            masked,
            rule(&["uname"], SeccompAction::Log, None),
        ],
    );
    let plan = plan(&Seccomp::Profile(p), 0)
        .expect("compiles")
        .expect("a filter");
    assert_eq!(x86(&plan, "mkdirat", [0; 6]), errno(95));
    assert_eq!(x86(&plan, "mkdir", [0; 6]), errno(95));
    assert_eq!(
        x86(&plan, "getpid", [0; 6]),
        errno(libc::EPERM),
        "EPERM by default"
    );
    assert_eq!(x86(&plan, "read", [0; 6]), ALLOW);
    assert_eq!(x86(&plan, "write", [1, 0, 10, 0, 0, 0]), ALLOW);
    assert_eq!(
        x86(&plan, "write", [1, 0, (1 << 40) + 1, 0, 0, 0]),
        KILL_PROCESS,
        "64-bit compare"
    );
    assert_eq!(
        x86(&plan, "openat", [0, 0, libc::O_RDONLY as u64, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        x86(
            &plan,
            "openat",
            [0, 0, (libc::O_CREAT | libc::O_WRONLY) as u64, 0, 0, 0]
        ),
        libc::SECCOMP_RET_TRAP
    );
    assert_eq!(x86(&plan, "uname", [0; 6]), libc::SECCOMP_RET_LOG);
}

#[test]
fn a_deny_list_default_with_exceptions() {
    let mut p = profile(
        SeccompAction::KillProcess,
        vec![
            rule(&["read", "write", "exit_group"], SeccompAction::Allow, None),
            rule(&["clone3"], SeccompAction::Errno, Some(38)),
        ],
    );
    p.flags = vec![SeccompFlag::Log, SeccompFlag::Tsync];
    let plan = plan(&Seccomp::Profile(p), 0)
        .expect("compiles")
        .expect("a filter");
    assert_eq!(plan.flags, libc::SECCOMP_FILTER_FLAG_LOG);
    assert_eq!(x86(&plan, "read", [0; 6]), ALLOW);
    assert_eq!(x86(&plan, "clone3", [0; 6]), errno(38));
    assert_eq!(x86(&plan, "openat", [0; 6]), KILL_PROCESS);
}

#[test]
fn allow_everything_still_installs_a_filter() {
    let plan = plan(&Seccomp::Profile(profile(SeccompAction::Allow, vec![])), 0)
        .expect("compiles")
        .expect("a filter");
    assert_eq!(plan.filter_count(), 1);
    assert_eq!(x86(&plan, "keyctl", [0; 6]), ALLOW);
    assert_eq!(verdict(&plan, 20, AUDIT_ARCH_I386, [0; 6]), KILL_PROCESS);
}

#[test]
fn unconfined_has_no_filter_and_bad_profiles_are_refused() {
    assert!(plan(&Seccomp::Unconfined, 0)
        .expect("nothing to compile")
        .is_none());
    let bad = profile(
        SeccompAction::Allow,
        vec![rule(&["read"], SeccompAction::Notify, None)],
    );
    let err = check(&Seccomp::Profile(bad), 0).expect_err("notify");
    assert!(
        matches!(&err, SeccompError::Profile(e) if e.field == "syscalls[0].action"),
        "{err}"
    );
}
