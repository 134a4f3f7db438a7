//! The container's device allow-list: on cgroup v2 the kernel asks a BPF
//! program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to the cgroup, about
//! every `open` of a device node and every `mknod`, as runc does it.
//!
//! The program is assembled here, a handful of instructions per rule, the way
//! runc's `devicefilter` builds it: load the request (device type, access,
//! major, minor) from the context into registers, then one block per rule that
//! jumps to the next rule on any mismatch and returns 1 (allow) at its end;
//! after the last rule, 0 (deny). [`DEFAULT_RULES`] is runc's default list
//! without its blanket `mknod` of any device: `mknod` of a block device, or of
//! a character device not listed, is refused.
//!
//! Loading and attaching are in `bpf.rs`; this file is the program as data.

/// Device type in the context's `access_type` (low 16 bits).
const DEV_BLOCK: u32 = 1;
const DEV_CHAR: u32 = 2;

/// Access bits (`access_type >> 16`).
pub(crate) const ACC_MKNOD: u32 = 1;
pub(crate) const ACC_READ: u32 = 2;
pub(crate) const ACC_WRITE: u32 = 4;
const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// A kind of device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeviceKind {
    /// `b`: no default rule allows one; the container's own disks get one
    /// each ([`disk_rule`]).
    Block,
    /// `c`.
    Char,
}

impl DeviceKind {
    fn code(self) -> u32 {
        match self {
            DeviceKind::Block => DEV_BLOCK,
            DeviceKind::Char => DEV_CHAR,
        }
    }
}

/// One allowed device, or range of minors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceRule {
    pub kind: DeviceKind,
    pub major: u32,
    /// `None`: every minor.
    pub minor: Option<u32>,
    /// `ACC_*` bits allowed.
    pub access: u32,
}

const fn char_dev(major: u32, minor: Option<u32>) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Char,
        major,
        minor,
        access: ACC_ALL,
    }
}

/// What a container may open and create: `null`, `zero`, `full`, `random`,
/// `urandom`, `tty`, `console`, `ptmx` and every `pts` (read, write, mknod, as
/// runc's defaults say). Everything else is denied.
pub(crate) const DEFAULT_RULES: [DeviceRule; 9] = [
    char_dev(1, Some(3)),
    char_dev(1, Some(5)),
    char_dev(1, Some(7)),
    char_dev(1, Some(8)),
    char_dev(1, Some(9)),
    char_dev(5, Some(0)),
    char_dev(5, Some(1)),
    char_dev(5, Some(2)),
    char_dev(136, None),
];

/// The rule that lets a container's first process mount one of its own
/// disks, the block device `dev` (an `st_rdev`): read, and write unless the
/// mount is read-only; never mknod.
pub(crate) fn disk_rule(dev: u64, readonly: bool) -> DeviceRule {
    DeviceRule {
        kind: DeviceKind::Block,
        major: nix::sys::stat::major(dev) as u32,
        minor: Some(nix::sys::stat::minor(dev) as u32),
        access: if readonly {
            ACC_READ
        } else {
            ACC_READ | ACC_WRITE
        },
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    /// `src << 4 | dst`.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Opcodes used (`BPF_CLASS | BPF_OP | BPF_SRC`, or `| BPF_MEM | BPF_W`).
pub(crate) mod op {
    /// `dst = *(u32 *)(src + off)`.
    pub(crate) const LDX_W: u8 = 0x61;
    /// `(u32) dst &= imm`.
    pub(crate) const AND32_K: u8 = 0x54;
    /// `(u32) dst >>= imm`.
    pub(crate) const RSH32_K: u8 = 0x74;
    /// `(u32) dst = imm`.
    pub(crate) const MOV32_K: u8 = 0xb4;
    /// `(u32) dst = src`.
    pub(crate) const MOV32_X: u8 = 0xbc;
    /// `if dst != imm goto pc + off`.
    pub(crate) const JNE_K: u8 = 0x55;
    /// `if dst != src goto pc + off`.
    pub(crate) const JNE_X: u8 = 0x5d;
    /// `return r0`.
    pub(crate) const EXIT: u8 = 0x95;
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        Self {
            code,
            regs: (src << 4) | dst,
            off,
            imm,
        }
    }

    /// The kernel's layout: code, registers, offset (LE), immediate (LE).
    pub(crate) fn encode(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[0] = self.code;
        out[1] = self.regs;
        out[2..4].copy_from_slice(&self.off.to_le_bytes());
        out[4..8].copy_from_slice(&self.imm.to_le_bytes());
        out
    }
}

/// Registers: r1 holds the context on entry; r2..r5 the request; r0 the result.
const R0: u8 = 0;
const R1: u8 = 1;
const R2_TYPE: u8 = 2;
const R3_ACCESS: u8 = 3;
const R4_MAJOR: u8 = 4;
const R5_MINOR: u8 = 5;

/// Offsets in `struct bpf_cgroup_dev_ctx { u32 access_type, major, minor; }`.
const CTX_ACCESS_TYPE: i16 = 0;
const CTX_MAJOR: i16 = 4;
const CTX_MINOR: i16 = 8;

fn imm(v: u32) -> i32 {
    // Majors fit 12 bits and minors 20: always positive as i32.
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// The block of one rule: every test jumps past the block on a mismatch; the
/// block ends in `return 1`.
fn rule_block(rule: &DeviceRule) -> Vec<Insn> {
    // Each test as (opcode, dst, src, imm) before the offsets are known.
    let mut tests: Vec<(u8, u8, u8, i32)> = vec![(op::JNE_K, R2_TYPE, 0, imm(rule.kind.code()))];
    let mut pre: Vec<Vec<Insn>> = vec![vec![]];
    if rule.access & ACC_ALL != ACC_ALL {
        // Allowed when the request asks for nothing beyond the rule:
        // (access & rule) == access.
        pre.push(vec![
            Insn::new(op::MOV32_X, R1, R3_ACCESS, 0, 0),
            Insn::new(op::AND32_K, R1, 0, 0, imm(rule.access)),
        ]);
        tests.push((op::JNE_X, R1, R3_ACCESS, 0));
    }
    pre.push(vec![]);
    tests.push((op::JNE_K, R4_MAJOR, 0, imm(rule.major)));
    if let Some(minor) = rule.minor {
        pre.push(vec![]);
        tests.push((op::JNE_K, R5_MINOR, 0, imm(minor)));
    }
    let len: usize = pre.iter().map(Vec::len).sum::<usize>() + tests.len() + 2;
    let mut out = Vec::with_capacity(len);
    for (pre, (code, dst, src, k)) in pre.into_iter().zip(tests) {
        out.extend(pre);
        // Jump to the first instruction after the block.
        let off = i16::try_from(len - out.len() - 1).unwrap_or(i16::MAX);
        out.push(Insn::new(code, dst, src, off, k));
    }
    out.push(Insn::new(op::MOV32_K, R0, 0, 0, 1));
    out.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    out
}

/// The whole program for `rules`: the request loaded into r2..r5, one block
/// per rule, then `return 0`.
pub(crate) fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(op::LDX_W, R2_TYPE, R1, CTX_ACCESS_TYPE, 0),
        Insn::new(op::AND32_K, R2_TYPE, 0, 0, 0xffff),
        Insn::new(op::LDX_W, R3_ACCESS, R1, CTX_ACCESS_TYPE, 0),
        Insn::new(op::RSH32_K, R3_ACCESS, 0, 0, 16),
        Insn::new(op::LDX_W, R4_MAJOR, R1, CTX_MAJOR, 0),
        Insn::new(op::LDX_W, R5_MINOR, R1, CTX_MINOR, 0),
    ];
    for rule in rules {
        p.extend(rule_block(rule));
    }
    p.push(Insn::new(op::MOV32_K, R0, 0, 0, 0));
    p.push(Insn::new(op::EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    //! The program checked as data (its exact instructions) and by its
    //! decisions, with a small evaluator of the eight opcodes it uses. The
    //! privileged tests load it into the kernel.

    use super::*;

    #[test]
    fn a_disk_rule_allows_its_own_block_device_and_nothing_more() {
        let rw = disk_rule(nix::sys::stat::makedev(254, 16), false);
        assert_eq!(
            rw,
            DeviceRule {
                kind: DeviceKind::Block,
                major: 254,
                minor: Some(16),
                access: ACC_READ | ACC_WRITE,
            }
        );
        assert_eq!(
            disk_rule(nix::sys::stat::makedev(8, 1), true).access,
            ACC_READ
        );
        let p = program(&[rw]);
        assert_eq!(
            decide(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 254, 16),
            Some(true)
        );
        assert_eq!(decide(&p, DEV_BLOCK, ACC_MKNOD, 254, 16), Some(false));
        assert_eq!(decide(&p, DEV_BLOCK, ACC_READ, 254, 17), Some(false));
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ, 254, 16), Some(false));
    }

    /// Runs `p` on a request as the kernel would; `None` for anything the
    /// program should never do (an unknown opcode, a jump out of it, a loop).
    fn decide(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> Option<bool> {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        for _ in 0..=p.len() {
            let i = p.get(pc)?;
            let (dst, src) = (usize::from(i.regs & 0xf), usize::from(i.regs >> 4));
            let k = i.imm as i64 as u64;
            let mut next = pc + 1;
            match i.code {
                op::LDX_W => {
                    if src != 1 || i.off % 4 != 0 {
                        return None;
                    }
                    r[dst] = u64::from(*ctx.get(usize::try_from(i.off / 4).ok()?)?);
                }
                op::AND32_K => r[dst] = u64::from((r[dst] as u32) & (k as u32)),
                op::RSH32_K => r[dst] = u64::from((r[dst] as u32) >> k),
                op::MOV32_K => r[dst] = u64::from(k as u32),
                op::MOV32_X => r[dst] = u64::from(r[src] as u32),
                op::JNE_K | op::JNE_X => {
                    let other = if i.code == op::JNE_K { k } else { r[src] };
                    if r[dst] != other {
                        next = usize::try_from(pc as i64 + 1 + i64::from(i.off)).ok()?;
                        if next <= pc {
                            return None;
                        }
                    }
                }
                op::EXIT => return Some(r[0] == 1),
                _ => return None,
            }
            pc = next;
        }
        None
    }

    #[test]
    fn the_prologue_and_one_rule_are_exact() {
        let p = program(&[char_dev(1, Some(3))]);
        let bytes: Vec<[u8; 8]> = p.iter().map(Insn::encode).collect();
        assert_eq!(
            bytes,
            vec![
                [0x61, 0x12, 0, 0, 0, 0, 0, 0],       // r2 = ctx->access_type
                [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0], // w2 &= 0xffff
                [0x61, 0x13, 0, 0, 0, 0, 0, 0],       // r3 = ctx->access_type
                [0x74, 0x03, 0, 0, 16, 0, 0, 0],      // w3 >>= 16
                [0x61, 0x14, 4, 0, 0, 0, 0, 0],       // r4 = ctx->major
                [0x61, 0x15, 8, 0, 0, 0, 0, 0],       // r5 = ctx->minor
                [0x55, 0x02, 4, 0, 2, 0, 0, 0],       // if r2 != char goto +4
                [0x55, 0x04, 3, 0, 1, 0, 0, 0],       // if r4 != 1 goto +3
                [0x55, 0x05, 2, 0, 3, 0, 0, 0],       // if r5 != 3 goto +2
                [0xb4, 0x00, 0, 0, 1, 0, 0, 0],       // w0 = 1
                [0x95, 0x00, 0, 0, 0, 0, 0, 0],       // exit
                [0xb4, 0x00, 0, 0, 0, 0, 0, 0],       // w0 = 0
                [0x95, 0x00, 0, 0, 0, 0, 0, 0],       // exit
            ]
        );
    }

    #[test]
    fn a_partial_access_rule_tests_the_access_bits() {
        let rule = DeviceRule {
            kind: DeviceKind::Block,
            major: 8,
            minor: None,
            access: ACC_READ,
        };
        let block = rule_block(&rule);
        assert_eq!(
            block,
            vec![
                Insn::new(op::JNE_K, R2_TYPE, 0, 6, 1),
                Insn::new(op::MOV32_X, R1, R3_ACCESS, 0, 0),
                Insn::new(op::AND32_K, R1, 0, 0, 2),
                Insn::new(op::JNE_X, R1, R3_ACCESS, 3, 0),
                Insn::new(op::JNE_K, R4_MAJOR, 0, 2, 8),
                Insn::new(op::MOV32_K, R0, 0, 0, 1),
                Insn::new(op::EXIT, 0, 0, 0, 0),
            ]
        );
        let p = program(&[rule]);
        assert_eq!(decide(&p, DEV_BLOCK, ACC_READ, 8, 17), Some(true));
        assert_eq!(
            decide(&p, DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 17),
            Some(false)
        );
        assert_eq!(decide(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), Some(false));
        assert_eq!(decide(&p, DEV_CHAR, ACC_READ, 8, 0), Some(false));
    }

    #[test]
    fn the_default_list_allows_the_standard_nodes_and_nothing_else() {
        let p = program(&DEFAULT_RULES);
        let rw = ACC_READ | ACC_WRITE;
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
            (136, 0),
            (136, 7),
            (136, 1 << 19),
        ] {
            for access in [ACC_READ, ACC_WRITE, rw, ACC_MKNOD, ACC_ALL] {
                assert_eq!(
                    decide(&p, DEV_CHAR, access, major, minor),
                    Some(true),
                    "c {major}:{minor} access {access}"
                );
            }
        }
        for (kind, major, minor) in [
            (DEV_BLOCK, 1, 3),   // a block device with null's numbers
            (DEV_BLOCK, 8, 0),   // sda
            (DEV_BLOCK, 254, 0), // vda
            (DEV_CHAR, 1, 1),    // mem
            (DEV_CHAR, 1, 2),    // kmem
            (DEV_CHAR, 1, 4),    // port
            (DEV_CHAR, 1, 11),   // kmsg
            (DEV_CHAR, 4, 0),    // tty0
            (DEV_CHAR, 5, 3),
            (DEV_CHAR, 10, 200), // net/tun
            (DEV_CHAR, 10, 232), // kvm
            (DEV_CHAR, 137, 0),  // the next pts major
            (DEV_CHAR, 0, 0),
        ] {
            for access in [ACC_READ, ACC_WRITE, ACC_MKNOD] {
                assert_eq!(
                    decide(&p, kind, access, major, minor),
                    Some(false),
                    "{kind} {major}:{minor} access {access}"
                );
            }
        }
    }

    #[test]
    fn jumps_stay_inside_the_program_and_go_forward() {
        let p = program(&DEFAULT_RULES);
        for (pc, i) in p.iter().enumerate() {
            if matches!(i.code, op::JNE_K | op::JNE_X) {
                let target = pc as i64 + 1 + i64::from(i.off);
                assert!(i.off >= 0, "backward jump at {pc}");
                assert!(target < p.len() as i64, "jump out at {pc}");
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(op::EXIT));
        // 6 loads, 4 or 5 per rule, and the final return.
        assert_eq!(p.len(), 6 + 8 * 5 + 4 + 2);
    }
}
