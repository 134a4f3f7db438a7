//! The two questions this crate asks of ELF files: "what is in section X" (for a module's
//! `.modinfo`) and "is this executable static" (for the agent, which runs as PID 1 with no dynamic
//! loader in the initrd). Parsing is done by the `object` crate.

use object::elf::{FileHeader64, EM_X86_64, ET_DYN, ET_EXEC, PT_INTERP};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

/// Errors of reading an ELF file.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The bytes are not a well-formed 64-bit ELF file.
    #[error("not a well-formed 64-bit ELF file")]
    Malformed(#[source] object::read::Error),
}

/// Kind of an ELF executable as far as the guest cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linkage {
    /// No program interpreter: runs without a dynamic loader (static or static-pie).
    Static,
    /// Needs the program interpreter named in `PT_INTERP`.
    Dynamic,
}

/// Returns the contents of the section named `name`, or `None` when there is no such section.
pub fn section_data<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    let header = FileHeader64::<Endianness>::parse(data).map_err(ElfError::Malformed)?;
    let endian = header.endian().map_err(ElfError::Malformed)?;
    let sections = header.sections(endian, data).map_err(ElfError::Malformed)?;
    match sections.section_by_name(endian, name.as_bytes()) {
        None => Ok(None),
        Some((_, section)) => section
            .data(endian, data)
            .map(Some)
            .map_err(ElfError::Malformed),
    }
}

/// Whether `data` is an x86-64 executable (ET_EXEC or ET_DYN), and its linkage.
///
/// Returns `None` when it is a well-formed ELF file of another kind (a relocatable object, another
/// machine).
pub fn x86_64_executable_linkage(data: &[u8]) -> Result<Option<Linkage>, ElfError> {
    let header = FileHeader64::<Endianness>::parse(data).map_err(ElfError::Malformed)?;
    let endian = header.endian().map_err(ElfError::Malformed)?;
    let file_type = header.e_type(endian);
    if header.e_machine(endian) != EM_X86_64 || (file_type != ET_EXEC && file_type != ET_DYN) {
        return Ok(None);
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(ElfError::Malformed)?;
    let dynamic = segments.iter().any(|p| p.p_type(endian) == PT_INTERP);
    Ok(Some(if dynamic {
        Linkage::Dynamic
    } else {
        Linkage::Static
    }))
}

#[cfg(test)]
pub(crate) mod test_elf {
    //! Builders of tiny, valid ELF64 files for tests.

    fn header(e_type: u16, phnum: u16, shoff: u64, shnum: u16, shstrndx: u16) -> Vec<u8> {
        let mut h = Vec::with_capacity(64);
        h.extend_from_slice(b"\x7fELF");
        h.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV ABI
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&e_type.to_le_bytes());
        h.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes()); // entry
        h.extend_from_slice(&(if phnum > 0 { 64u64 } else { 0 }).to_le_bytes());
        h.extend_from_slice(&shoff.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // flags
        h.extend_from_slice(&64u16.to_le_bytes()); // ehsize
        h.extend_from_slice(&56u16.to_le_bytes()); // phentsize
        h.extend_from_slice(&phnum.to_le_bytes());
        h.extend_from_slice(&64u16.to_le_bytes()); // shentsize
        h.extend_from_slice(&shnum.to_le_bytes());
        h.extend_from_slice(&shstrndx.to_le_bytes());
        assert_eq!(h.len(), 64);
        h
    }

    fn section_header(name: u32, sh_type: u32, offset: u64, size: u64) -> Vec<u8> {
        let mut s = Vec::with_capacity(64);
        s.extend_from_slice(&name.to_le_bytes());
        s.extend_from_slice(&sh_type.to_le_bytes());
        s.extend_from_slice(&0u64.to_le_bytes()); // flags
        s.extend_from_slice(&0u64.to_le_bytes()); // addr
        s.extend_from_slice(&offset.to_le_bytes());
        s.extend_from_slice(&size.to_le_bytes());
        s.extend_from_slice(&0u32.to_le_bytes()); // link
        s.extend_from_slice(&0u32.to_le_bytes()); // info
        s.extend_from_slice(&1u64.to_le_bytes()); // addralign
        s.extend_from_slice(&0u64.to_le_bytes()); // entsize
        s
    }

    /// A relocatable ELF64 object with one `.modinfo` section holding `modinfo`.
    pub(crate) fn relocatable_with_modinfo(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0";
        let modinfo_off = 64u64;
        let shstr_off = modinfo_off + modinfo.len() as u64;
        let mut shoff = shstr_off + shstrtab.len() as u64;
        shoff = shoff.div_ceil(8) * 8;
        let mut f = header(1, 0, shoff, 3, 2);
        f.extend_from_slice(modinfo);
        f.extend_from_slice(shstrtab);
        f.resize(shoff as usize, 0);
        f.extend_from_slice(&section_header(0, 0, 0, 0));
        f.extend_from_slice(&section_header(1, 1, modinfo_off, modinfo.len() as u64));
        f.extend_from_slice(&section_header(10, 3, shstr_off, shstrtab.len() as u64));
        f
    }

    /// An x86-64 executable with one PT_LOAD segment and, if `interp`, a PT_INTERP segment.
    pub(crate) fn executable(interp: bool) -> Vec<u8> {
        let phnum: u16 = if interp { 2 } else { 1 };
        let mut f = header(2, phnum, 0, 0, 0);
        let mut ph = |p_type: u32| {
            f.extend_from_slice(&p_type.to_le_bytes());
            f.extend_from_slice(&[0; 52]);
        };
        ph(1);
        if interp {
            ph(3);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_named_section() {
        let f = test_elf::relocatable_with_modinfo(b"name=x\0");
        assert_eq!(
            section_data(&f, ".modinfo").expect("valid elf"),
            Some(&b"name=x\0"[..])
        );
        assert_eq!(section_data(&f, ".text").expect("valid elf"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            section_data(b"not an elf file at all, not at all", ".modinfo"),
            Err(ElfError::Malformed(_))
        ));
        assert!(section_data(&[], ".modinfo").is_err());
    }

    #[test]
    fn linkage_from_interp_segment() {
        assert_eq!(
            x86_64_executable_linkage(&test_elf::executable(false)).expect("valid"),
            Some(Linkage::Static)
        );
        assert_eq!(
            x86_64_executable_linkage(&test_elf::executable(true)).expect("valid"),
            Some(Linkage::Dynamic)
        );
        let obj = test_elf::relocatable_with_modinfo(b"");
        assert_eq!(x86_64_executable_linkage(&obj).expect("valid"), None);
    }

    #[test]
    fn this_test_binary_is_dynamic() {
        let exe = std::env::current_exe().expect("current exe");
        let data = std::fs::read(exe).expect("read test binary");
        assert_eq!(
            x86_64_executable_linkage(&data).expect("valid elf"),
            Some(Linkage::Dynamic)
        );
    }
}
