//! The pause image's program: a 224-byte static x86-64 ELF executable, written here byte by byte
//! so that it needs no toolchain or libc. It installs handlers for SIGTERM and SIGINT that exit 0,
//! then calls `pause(2)` forever. As PID 1 of its container's PID namespace it gets no default
//! signal actions, so without the handlers `kill` with SIGTERM would be ignored and the sandbox
//! could only be stopped with SIGKILL. It exits 1 when a handler cannot be installed.
//!
//! ```text
//!        mov  edi, 15 ; call install        ; SIGTERM
//!        mov  edi, 2  ; call install        ; SIGINT
//! again: mov  eax, 34 ; syscall ; jmp again ; pause()
//! install:
//!        lea  rsi, [rip + act] ; xor edx, edx ; mov r10d, 8
//!        mov  eax, 13 ; syscall             ; rt_sigaction(edi, &act, NULL, 8)
//!        test eax, eax ; jnz fail ; ret
//! fail:  mov  edi, 1 ; jmp exit
//! handler:
//!        xor  edi, edi
//! exit:  mov  eax, 231 ; syscall           ; exit_group(edi)
//! act:   .quad handler, SA_RESTORER, handler, 0   ; struct kernel_sigaction
//! ```
//! x86-64 Linux delivers a signal only to a handler that has `SA_RESTORER`; the handler never
//! returns, so its own address serves as the restorer.

/// Where the file is mapped (a fixed-address executable, as static non-PIE programs are).
const BASE: u64 = 0x40_0000;
/// ELF header (64) + one program header (56).
const CODE_OFFSET: u64 = 120;
/// The handler's offset in the code.
const HANDLER: u64 = 0x3f;
/// `SA_RESTORER`.
const SA_RESTORER: u64 = 0x0400_0000;

#[rustfmt::skip]
const CODE: [u8; 0x48] = [
    0xbf, 0x0f, 0x00, 0x00, 0x00,             // 00 mov edi, 15
    0xe8, 0x13, 0x00, 0x00, 0x00,             // 05 call install (0x1d)
    0xbf, 0x02, 0x00, 0x00, 0x00,             // 0a mov edi, 2
    0xe8, 0x09, 0x00, 0x00, 0x00,             // 0f call install (0x1d)
    0xb8, 0x22, 0x00, 0x00, 0x00,             // 14 mov eax, 34 (pause)
    0x0f, 0x05,                               // 19 syscall
    0xeb, 0xf7,                               // 1b jmp 0x14
    0x48, 0x8d, 0x35, 0x24, 0x00, 0x00, 0x00, // 1d lea rsi, [rip + 0x24] (act, 0x48)
    0x31, 0xd2,                               // 24 xor edx, edx
    0x41, 0xba, 0x08, 0x00, 0x00, 0x00,       // 26 mov r10d, 8
    0xb8, 0x0d, 0x00, 0x00, 0x00,             // 2c mov eax, 13 (rt_sigaction)
    0x0f, 0x05,                               // 31 syscall
    0x85, 0xc0,                               // 33 test eax, eax
    0x75, 0x01,                               // 35 jnz 0x38
    0xc3,                                     // 37 ret
    0xbf, 0x01, 0x00, 0x00, 0x00,             // 38 mov edi, 1
    0xeb, 0x02,                               // 3d jmp 0x41
    0x31, 0xff,                               // 3f xor edi, edi (the handler)
    0xb8, 0xe7, 0x00, 0x00, 0x00,             // 41 mov eax, 231 (exit_group)
    0x0f, 0x05,                               // 46 syscall
];

/// The program's bytes.
pub(crate) fn program() -> Vec<u8> {
    let handler = BASE + CODE_OFFSET + HANDLER;
    let size = CODE_OFFSET + CODE.len() as u64 + 32;
    let mut out = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little endian, version 1, System V ABI.
    out.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    out.extend_from_slice(&(BASE + CODE_OFFSET).to_le_bytes()); // entry
    out.extend_from_slice(&64u64.to_le_bytes()); // program headers
    out.extend_from_slice(&0u64.to_le_bytes()); // no section headers
    out.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        // header size, program header size and count, section header size, count, names
        out.extend_from_slice(&half.to_le_bytes());
    }
    // One PT_LOAD, read + execute, of the whole file.
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&5u32.to_le_bytes());
    for word in [0, BASE, BASE, size, size, 0x1000] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    debug_assert_eq!(out.len() as u64, CODE_OFFSET);
    out.extend_from_slice(&CODE);
    for word in [handler, SA_RESTORER, handler, 0] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use guest_image::elf::{x86_64_executable_linkage, Linkage};
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    use super::*;

    /// Kills the child on drop, so a failed assertion leaves no process behind.
    struct Guard(Child);

    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn caught_signals(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .expect("SigCgt");
        u64::from_str_radix(line.trim(), 16).expect("hex mask")
    }

    /// Runs the program, waits until both handlers are installed (its caught-signal mask), sends
    /// `signal`, and returns how it exited.
    fn run_and_signal(signal: Signal) -> std::process::ExitStatus {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pause");
        std::fs::write(&path, program()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut child = Guard(
            Command::new(&path)
                .spawn()
                .expect("spawn the pause program"),
        );
        let pid = child.0.id();
        let want = (1u64 << (15 - 1)) | (1u64 << (2 - 1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while caught_signals(pid) & want != want {
            assert!(
                Instant::now() < deadline,
                "the handlers were never installed"
            );
            assert!(child.0.try_wait().expect("try_wait").is_none(), "it exited");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(child.0.try_wait().expect("try_wait").is_none());
        kill(Pid::from_raw(pid as i32), signal).expect("kill");
        child.0.wait().expect("wait")
    }

    #[test]
    fn is_a_static_executable() {
        assert_eq!(
            x86_64_executable_linkage(&program()).expect("an ELF executable"),
            Some(Linkage::Static)
        );
        assert_eq!(program().len(), 224);
    }

    #[test]
    fn exits_0_on_sigterm_and_sigint() {
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            let status = run_and_signal(signal);
            assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
            assert_eq!(status.signal(), None);
        }
    }
}
