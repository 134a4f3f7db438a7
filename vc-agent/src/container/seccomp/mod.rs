//! Seccomp for container processes: the built-in default profile
//! (`default.rs`), OCI `LinuxSeccomp` profiles compiled to BPF with the
//! `seccompiler` crate, and the installation of the compiled filters in the
//! forked child.
//!
//! A profile is compiled before the fork, per process (the default profile
//! depends on the process's capabilities), into one filter per distinct
//! non-allow action:
//!
//! - a *base* filter returns the profile's default action for every system
//!   call that no rule matches, and allows the rest (skipped when the default
//!   action is allow);
//! - for each other action of the profile (`SCMP_ACT_ERRNO` with `ENOSYS`,
//!   `SCMP_ACT_KILL_PROCESS`, ...), a filter that returns it for the rules with
//!   that action and allows the rest.
//!
//! The kernel runs every filter and keeps the strictest answer (`KILL_PROCESS >
//! KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW`), which is the action of the
//! matching rule, or the default when none matches. Each filter starts with
//! seccompiler's architecture check (a system call of another ABI than x86_64,
//! such as i386 through `int 0x80`, kills the process) and with a check that
//! kills x32 system calls (numbers with bit 30 set), as libseccomp does for a
//! filter that lists x86_64 alone.
//!
//! Argument conditions compare all 64 bits (as libseccomp does). Names that
//! x86_64 does not have are skipped, as runc skips names libseccomp does not
//! know.

mod default;
mod table;

use std::collections::BTreeMap;

use nix::errno::Errno;
use seccompiler::{
    BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
};
use vc_proto::{Seccomp, SeccompAction, SeccompArg, SeccompFlag, SeccompOp, SeccompProfile};

/// Why a seccomp choice cannot be turned into filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile does not pass [`SeccompProfile::validate`].
    #[error(transparent)]
    Profile(#[from] vc_proto::SeccompProfileError),
    /// seccompiler refused a filter.
    #[error("the seccomp filter for {action} cannot be compiled: {reason}")]
    Compile {
        /// The action of the filter.
        action: String,
        /// seccompiler's error.
        reason: String,
    },
    /// A compiled filter is longer than the kernel accepts.
    #[error(
        "the seccomp filter for {action} has {len} BPF instructions, more than the kernel's {max}"
    )]
    TooLong {
        /// The action of the filter.
        action: String,
        /// Its length.
        len: usize,
        /// `BPF_MAXINSNS`.
        max: usize,
    },
}

/// Most instructions in one filter (`BPF_MAXINSNS`).
const BPF_MAXINSNS: usize = 4096;

/// x32 system calls have this bit set in their number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The compiled filters of one process, ready for the child.
pub(crate) struct SeccompPlan {
    /// In installation order.
    filters: Vec<Vec<libc::sock_filter>>,
    /// `SECCOMP_FILTER_FLAG_*` for every filter.
    flags: libc::c_ulong,
}

impl std::fmt::Debug for SeccompPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeccompPlan")
            .field(
                "filter_lengths",
                &self.filters.iter().map(Vec::len).collect::<Vec<_>>(),
            )
            .field("flags", &self.flags)
            .finish()
    }
}

/// The filters for a process keeping the capabilities of `keep`, or `None`
/// for [`Seccomp::Unconfined`].
pub(crate) fn plan(policy: &Seccomp, keep: u64) -> Result<Option<SeccompPlan>, SeccompError> {
    let profile = match policy {
        Seccomp::Unconfined => return Ok(None),
        Seccomp::Default => default::profile(keep),
        Seccomp::Profile(p) => p.clone(),
    };
    compile(&profile).map(Some)
}

/// Checks a choice at container create: validates a profile and compiles it
/// for the main process's capabilities, so that what the agent refuses is
/// refused before any process exists.
pub(crate) fn check(policy: &Seccomp, keep: u64) -> Result<(), SeccompError> {
    plan(policy, keep).map(|_| ())
}

/// seccompiler's form of an action; `Kill` is `KillThread`, as in libseccomp.
fn action_of(action: SeccompAction, ret: Option<u32>) -> seccompiler::SeccompAction {
    let ret = ret.unwrap_or(libc::EPERM as u32);
    match action {
        SeccompAction::Allow => seccompiler::SeccompAction::Allow,
        SeccompAction::Errno => seccompiler::SeccompAction::Errno(ret),
        SeccompAction::Kill | SeccompAction::KillThread => seccompiler::SeccompAction::KillThread,
        SeccompAction::KillProcess => seccompiler::SeccompAction::KillProcess,
        SeccompAction::Trap => seccompiler::SeccompAction::Trap,
        SeccompAction::Trace => seccompiler::SeccompAction::Trace(ret),
        SeccompAction::Log => seccompiler::SeccompAction::Log,
        // Refused by `validate`; the strictest answer should it ever get here.
        SeccompAction::Notify => seccompiler::SeccompAction::KillProcess,
    }
}

/// A key that tells actions apart, return value included.
fn action_key(action: SeccompAction, ret: Option<u32>) -> String {
    format!("{:?}", action_of(action, ret))
}

fn condition(arg: &SeccompArg) -> Result<Option<SeccompCondition>, seccompiler::BackendError> {
    let (op, value) = match arg.op {
        SeccompOp::NotEqual => (SeccompCmpOp::Ne, arg.value),
        SeccompOp::LessThan => (SeccompCmpOp::Lt, arg.value),
        SeccompOp::LessOrEqual => (SeccompCmpOp::Le, arg.value),
        SeccompOp::Equal => (SeccompCmpOp::Eq, arg.value),
        SeccompOp::GreaterOrEqual => (SeccompCmpOp::Ge, arg.value),
        SeccompOp::GreaterThan => (SeccompCmpOp::Gt, arg.value),
        SeccompOp::MaskedEqual => {
            // libseccomp: `arg & value == value_two`, which never holds when
            // `value_two` has bits outside the mask.
            if arg.value_two & !arg.value != 0 {
                return Ok(None);
            }
            (SeccompCmpOp::MaskedEq(arg.value), arg.value_two)
        }
    };
    // `index` is at most 5 (validated).
    let index = u8::try_from(arg.index).unwrap_or(u8::MAX);
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map(Some)
}

/// The rules of one filter: per system call number, `None` when some rule
/// matches it unconditionally, else the conditional rules.
type Rules = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add_rule(rules: &mut Rules, nr: i64, conditions: &[SeccompCondition]) {
    let entry = rules.entry(nr).or_insert_with(|| Some(Vec::new()));
    if conditions.is_empty() {
        *entry = None;
    } else if let Some(list) = entry {
        // `SeccompRule::new` refuses only an empty list, excluded above.
        if let Ok(rule) = SeccompRule::new(conditions.to_vec()) {
            list.push(rule);
        }
    }
}

fn build(
    rules: Rules,
    mismatch: seccompiler::SeccompAction,
    matched: seccompiler::SeccompAction,
) -> Result<Vec<libc::sock_filter>, SeccompError> {
    let name = format!("{matched:?} (otherwise {mismatch:?})");
    let failed = |e: &dyn std::fmt::Display| SeccompError::Compile {
        action: name.clone(),
        reason: e.to_string(),
    };
    let rules = rules
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter =
        SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64).map_err(|e| failed(&e))?;
    let program: BpfProgram = filter.try_into().map_err(|e| failed(&e))?;
    let mut out = x32_guard();
    out.extend(program.into_iter().map(|i| libc::sock_filter {
        code: i.code,
        jt: i.jt,
        jf: i.jf,
        k: i.k,
    }));
    if out.len() > BPF_MAXINSNS {
        return Err(SeccompError::TooLong {
            action: name,
            len: out.len(),
            max: BPF_MAXINSNS,
        });
    }
    Ok(out)
}

/// Kills a system call whose number has the x32 bit; falls through otherwise.
fn x32_guard() -> Vec<libc::sock_filter> {
    let insn = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // Load `seccomp_data.nr` (offset 0).
        insn(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        insn(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        insn(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_KILL_PROCESS,
        ),
    ]
}

/// Compiles a validated profile into filters (see the module docs).
fn compile(profile: &SeccompProfile) -> Result<SeccompPlan, SeccompError> {
    profile.validate()?;
    let default = action_of(profile.default_action, profile.default_errno_ret);
    let mut base: Rules = BTreeMap::new();
    // Per non-allow action: (the action, its rules).
    let mut groups: BTreeMap<String, (seccompiler::SeccompAction, Rules)> = BTreeMap::new();
    for rule in &profile.syscalls {
        let action = action_of(rule.action, rule.errno_ret);
        if action == default {
            continue;
        }
        let mut conditions = Vec::with_capacity(rule.args.len());
        let mut never = false;
        for arg in &rule.args {
            match condition(arg).map_err(|e| SeccompError::Compile {
                action: format!("{action:?}"),
                reason: e.to_string(),
            })? {
                Some(c) => conditions.push(c),
                None => never = true,
            }
        }
        if never {
            continue;
        }
        for nr in rule.names.iter().filter_map(|n| table::number(n)) {
            add_rule(&mut base, nr, &conditions);
            if action != seccompiler::SeccompAction::Allow {
                let group = groups
                    .entry(action_key(rule.action, rule.errno_ret))
                    .or_insert_with(|| (action.clone(), BTreeMap::new()));
                add_rule(&mut group.1, nr, &conditions);
            }
        }
    }
    let mut filters = Vec::new();
    if default != seccompiler::SeccompAction::Allow {
        filters.push(build(base, default, seccompiler::SeccompAction::Allow)?);
    }
    for (_, (action, rules)) in groups {
        filters.push(build(rules, seccompiler::SeccompAction::Allow, action)?);
    }
    if filters.is_empty() {
        // Everything allowed: still one filter, for the architecture checks
        // and so that the process shows `Seccomp: 2`.
        filters.push(build(
            BTreeMap::new(),
            seccompiler::SeccompAction::Allow,
            seccompiler::SeccompAction::KillProcess,
        )?);
    }
    let mut flags: libc::c_ulong = 0;
    for flag in &profile.flags {
        flags |= match flag {
            SeccompFlag::Log => libc::SECCOMP_FILTER_FLAG_LOG,
            SeccompFlag::SpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            // One thread in the child: nothing to synchronize.
            SeccompFlag::Tsync => 0,
            // Refused by `validate`.
            SeccompFlag::WaitKillableRecv => 0,
        };
    }
    Ok(SeccompPlan { filters, flags })
}

impl SeccompPlan {
    /// Installs the filters in the calling thread, in order. Runs in the
    /// forked child: system calls only, no allocation. Needs `no_new_privs` or
    /// `CAP_SYS_ADMIN`.
    pub(crate) fn install(&self) -> Result<(), Errno> {
        for filter in &self.filters {
            let prog = libc::sock_fprog {
                // At most BPF_MAXINSNS (checked in `build`).
                len: filter.len() as libc::c_ushort,
                filter: filter.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` points at `filter`, which outlives the call; the
            // kernel copies the program and does not keep the pointer.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }

    /// How many filters are installed, in order.
    #[cfg(test)]
    pub(crate) fn filter_count(&self) -> usize {
        self.filters.len()
    }
}

#[cfg(test)]
mod tests;
