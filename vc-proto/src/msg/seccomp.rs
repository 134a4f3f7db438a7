//! Seccomp: which system call filter a container's processes run under
//! (carried by [`Request::CreateContainerV2`](crate::Request::CreateContainerV2)).
//!
//! A custom profile has the shape of the OCI runtime spec's `LinuxSeccomp`
//! (`linux.seccomp` in `config.json`): the serde attributes below give its JSON
//! field and value names (`defaultAction`, `SCMP_ACT_ERRNO`, ...), so a host can
//! read a profile file straight into [`SeccompProfile`]. They do not change the
//! wire form: bincode writes fields in order without names and enum variants by
//! index. `listenerPath` and `listenerMetadata` are not accepted (the agent has no
//! seccomp notify listener), and neither are Docker's profile extensions
//! (`archMap`, `includes`, `excludes`).
//!
//! [`SeccompProfile::validate`] is the check both sides run: the host before it
//! creates anything, the agent again at create.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The filter a container's processes get.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seccomp {
    /// The agent's built-in default, equivalent to Docker's and containerd's
    /// (an allow-list; everything else fails with `EPERM`), adjusted to each
    /// process's capabilities.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile in the OCI `LinuxSeccomp` form.
    Profile(SeccompProfile),
}

/// A seccomp profile in the OCI `LinuxSeccomp` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompProfile {
    /// What a system call that no rule matches gets.
    pub default_action: SeccompAction,
    /// The errno of `defaultAction` `SCMP_ACT_ERRNO` (default `EPERM`) or the
    /// message of `SCMP_ACT_TRACE`.
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_*` names. The agent compiles for x86_64 only: system calls of
    /// any other ABI (i386, x32) are killed whatever is listed here.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// Filter flags.
    #[serde(default)]
    pub flags: Vec<SeccompFlag>,
    /// The rules, in order.
    #[serde(default)]
    pub syscalls: Vec<SeccompSyscall>,
}

/// One rule: these system calls, when every argument condition holds, get
/// `action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompSyscall {
    /// System call names. Names the target architecture does not have are
    /// ignored, as runc and libseccomp do.
    pub names: Vec<String>,
    /// The action.
    pub action: SeccompAction,
    /// The errno of `SCMP_ACT_ERRNO` (default `EPERM`) or the message of
    /// `SCMP_ACT_TRACE`.
    #[serde(default)]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments; all must hold.
    #[serde(default)]
    pub args: Vec<SeccompArg>,
}

/// A condition on one system call argument, compared as 64 bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SeccompArg {
    /// Argument index, 0 to 5.
    pub index: u32,
    /// The value compared with (for `SCMP_CMP_MASKED_EQ`, the mask).
    pub value: u64,
    /// For `SCMP_CMP_MASKED_EQ`: the value the masked argument must equal.
    #[serde(default)]
    pub value_two: u64,
    /// The comparison.
    pub op: SeccompOp,
}

/// What a rule (or the default) does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SeccompAction {
    /// Kill the thread (`SCMP_ACT_KILL`).
    #[serde(rename = "SCMP_ACT_KILL")]
    Kill,
    /// Kill the whole process.
    #[serde(rename = "SCMP_ACT_KILL_PROCESS")]
    KillProcess,
    /// Kill the thread.
    #[serde(rename = "SCMP_ACT_KILL_THREAD")]
    KillThread,
    /// Send `SIGSYS`.
    #[serde(rename = "SCMP_ACT_TRAP")]
    Trap,
    /// Fail with an errno.
    #[serde(rename = "SCMP_ACT_ERRNO")]
    Errno,
    /// Notify a ptrace tracer.
    #[serde(rename = "SCMP_ACT_TRACE")]
    Trace,
    /// Allow.
    #[serde(rename = "SCMP_ACT_ALLOW")]
    Allow,
    /// Allow and log.
    #[serde(rename = "SCMP_ACT_LOG")]
    Log,
    /// Hand to a user-space listener: not supported, refused by
    /// [`SeccompProfile::validate`].
    #[serde(rename = "SCMP_ACT_NOTIFY")]
    Notify,
}

/// How an argument is compared with [`SeccompArg::value`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeccompOp {
    /// `arg != value`.
    #[serde(rename = "SCMP_CMP_NE")]
    NotEqual,
    /// `arg < value`.
    #[serde(rename = "SCMP_CMP_LT")]
    LessThan,
    /// `arg <= value`.
    #[serde(rename = "SCMP_CMP_LE")]
    LessOrEqual,
    /// `arg == value`.
    #[serde(rename = "SCMP_CMP_EQ")]
    Equal,
    /// `arg >= value`.
    #[serde(rename = "SCMP_CMP_GE")]
    GreaterOrEqual,
    /// `arg > value`.
    #[serde(rename = "SCMP_CMP_GT")]
    GreaterThan,
    /// `arg & value == value_two`.
    #[serde(rename = "SCMP_CMP_MASKED_EQ")]
    MaskedEqual,
}

/// A `seccomp(2)` filter flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SeccompFlag {
    /// Synchronize all threads (the process has one thread then: no effect).
    #[serde(rename = "SECCOMP_FILTER_FLAG_TSYNC")]
    Tsync,
    /// Log every action but `SCMP_ACT_ALLOW`.
    #[serde(rename = "SECCOMP_FILTER_FLAG_LOG")]
    Log,
    /// Leave speculative store bypass mitigation off.
    #[serde(rename = "SECCOMP_FILTER_FLAG_SPEC_ALLOW")]
    SpecAllow,
    /// Only meaningful with a notify listener: refused.
    #[serde(rename = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")]
    WaitKillableRecv,
}

/// Most rules a profile may hold.
pub const SECCOMP_MAX_RULES: usize = 1024;
/// Most names one rule may hold.
pub const SECCOMP_MAX_NAMES: usize = 1024;
/// The highest errno a rule may return (`MAX_ERRNO`).
pub const SECCOMP_MAX_ERRNO: u32 = 4095;

/// The `SCMP_ARCH_*` names of the OCI runtime spec.
pub const SECCOMP_ARCHES: [&str; 19] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
];

/// Why a seccomp profile is refused. `field` is the JSON path of the offending
/// value inside the profile, such as `syscalls[2].args[0].index`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("seccomp profile field {field}: {reason}")]
pub struct SeccompProfileError {
    /// Where, as a JSON path inside the profile.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn refuse(field: String, reason: impl Into<String>) -> SeccompProfileError {
    SeccompProfileError {
        field,
        reason: reason.into(),
    }
}

fn check_action(
    field: &str,
    action: SeccompAction,
    errno_field: String,
    errno: Option<u32>,
) -> Result<(), SeccompProfileError> {
    if action == SeccompAction::Notify {
        return Err(refuse(
            field.to_string(),
            "SCMP_ACT_NOTIFY needs a seccomp listener, which vc does not offer",
        ));
    }
    match errno {
        Some(_) if !matches!(action, SeccompAction::Errno | SeccompAction::Trace) => Err(refuse(
            errno_field,
            "only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take a return value",
        )),
        Some(n) if action == SeccompAction::Errno && !(1..=SECCOMP_MAX_ERRNO).contains(&n) => {
            Err(refuse(
                errno_field,
                format!("{n} is not an errno (1 to {SECCOMP_MAX_ERRNO})"),
            ))
        }
        Some(n) if n > 0xffff => Err(refuse(errno_field, format!("{n} does not fit 16 bits"))),
        _ => Ok(()),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl SeccompProfile {
    /// Checks what the agent needs: known architectures, no notify action or
    /// listener flag, return values only where they mean something, argument
    /// indexes 0 to 5, plausible names, and bounded sizes. Unknown field names
    /// and unknown action, operator or flag names are refused by deserialization
    /// already.
    pub fn validate(&self) -> Result<(), SeccompProfileError> {
        check_action(
            "defaultAction",
            self.default_action,
            "defaultErrnoRet".into(),
            self.default_errno_ret,
        )?;
        for (i, arch) in self.architectures.iter().enumerate() {
            if !SECCOMP_ARCHES.contains(&arch.as_str()) {
                return Err(refuse(
                    format!("architectures[{i}]"),
                    format!("{arch:?} is not an SCMP_ARCH_* name"),
                ));
            }
        }
        if let Some(i) = self
            .flags
            .iter()
            .position(|f| *f == SeccompFlag::WaitKillableRecv)
        {
            return Err(refuse(
                format!("flags[{i}]"),
                "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs a seccomp listener",
            ));
        }
        if self.syscalls.len() > SECCOMP_MAX_RULES {
            return Err(refuse(
                "syscalls".into(),
                format!("more than {SECCOMP_MAX_RULES} rules"),
            ));
        }
        for (i, rule) in self.syscalls.iter().enumerate() {
            let at = |rest: &str| format!("syscalls[{i}].{rest}");
            check_action(&at("action"), rule.action, at("errnoRet"), rule.errno_ret)?;
            if rule.names.is_empty() {
                return Err(refuse(at("names"), "a rule names at least one system call"));
            }
            if rule.names.len() > SECCOMP_MAX_NAMES {
                return Err(refuse(
                    at("names"),
                    format!("more than {SECCOMP_MAX_NAMES} names"),
                ));
            }
            if let Some((j, name)) = rule.names.iter().enumerate().find(|(_, n)| !valid_name(n)) {
                return Err(refuse(
                    at(&format!("names[{j}]")),
                    format!("{name:?} is not a system call name"),
                ));
            }
            if rule.args.len() > 6 {
                return Err(refuse(at("args"), "more than 6 conditions"));
            }
            for (j, arg) in rule.args.iter().enumerate() {
                if arg.index > 5 {
                    return Err(refuse(
                        at(&format!("args[{j}].index")),
                        format!("{} is not an argument index (0 to 5)", arg.index),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(names: &[&str], action: SeccompAction) -> SeccompSyscall {
        SeccompSyscall {
            names: names.iter().map(|s| s.to_string()).collect(),
            action,
            errno_ret: None,
            args: vec![],
        }
    }

    fn profile(syscalls: Vec<SeccompSyscall>) -> SeccompProfile {
        SeccompProfile {
            default_action: SeccompAction::Allow,
            default_errno_ret: None,
            architectures: vec!["SCMP_ARCH_X86_64".into()],
            flags: vec![],
            syscalls,
        }
    }

    #[test]
    fn valid_profiles_pass() {
        let mut p = profile(vec![rule(&["mkdir", "mkdirat"], SeccompAction::Errno)]);
        p.syscalls[0].errno_ret = Some(95);
        p.syscalls[0].args.push(SeccompArg {
            index: 1,
            value: 0o700,
            value_two: 0,
            op: SeccompOp::Equal,
        });
        p.validate().expect("valid");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: Vec<(SeccompProfile, &str)> = vec![
            (
                SeccompProfile {
                    default_action: SeccompAction::Notify,
                    ..profile(vec![])
                },
                "defaultAction",
            ),
            (
                SeccompProfile {
                    default_errno_ret: Some(1),
                    ..profile(vec![])
                },
                "defaultErrnoRet",
            ),
            (
                SeccompProfile {
                    architectures: vec!["SCMP_ARCH_Z80".into()],
                    ..profile(vec![])
                },
                "architectures[0]",
            ),
            (
                SeccompProfile {
                    flags: vec![SeccompFlag::Log, SeccompFlag::WaitKillableRecv],
                    ..profile(vec![])
                },
                "flags[1]",
            ),
            (
                profile(vec![rule(&[], SeccompAction::Errno)]),
                "syscalls[0].names",
            ),
            (
                profile(vec![
                    rule(&["read"], SeccompAction::Allow),
                    rule(&["read", "Bad Name"], SeccompAction::Errno),
                ]),
                "syscalls[1].names[1]",
            ),
            (
                profile(vec![SeccompSyscall {
                    errno_ret: Some(70_000),
                    ..rule(&["read"], SeccompAction::Errno)
                }]),
                "syscalls[0].errnoRet",
            ),
            (
                profile(vec![SeccompSyscall {
                    args: vec![SeccompArg {
                        index: 6,
                        value: 0,
                        value_two: 0,
                        op: SeccompOp::Equal,
                    }],
                    ..rule(&["read"], SeccompAction::Errno)
                }]),
                "syscalls[0].args[0].index",
            ),
        ];
        for (p, field) in cases {
            let err = p.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
            assert!(err
                .to_string()
                .starts_with(&format!("seccomp profile field {field}: ")));
        }
    }
}
