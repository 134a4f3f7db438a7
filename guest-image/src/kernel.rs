//! Reading the version of an x86 Linux kernel image (bzImage) from its boot setup header, so the
//! manifest names the release the guest will report in `uname -r`.
//!
//! The setup header starts at offset 0x1f1; at 0x202 the magic `HdrS`; at 0x20e a 16-bit pointer
//! (`kernel_version`) to a NUL-terminated string, relative to offset 0x200.

/// Errors of reading a kernel image.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The file has no x86 boot setup header.
    #[error("not an x86 Linux kernel image (no HdrS setup header)")]
    NotBzImage,
    /// The header has no version string.
    #[error("the kernel image carries no version string")]
    NoVersion,
}

const HDRS_OFFSET: usize = 0x202;
const VERSION_PTR_OFFSET: usize = 0x20e;
const SETUP_BASE: usize = 0x200;

/// The full version string, for example `6.1.0-56-cloud-amd64 (debian-kernel@...) #1 SMP ...`.
pub fn version_string(image: &[u8]) -> Result<String, KernelError> {
    if image.get(HDRS_OFFSET..HDRS_OFFSET + 4) != Some(b"HdrS") {
        return Err(KernelError::NotBzImage);
    }
    let ptr = image
        .get(VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(KernelError::NotBzImage)?;
    if ptr == 0 {
        return Err(KernelError::NoVersion);
    }
    let start = SETUP_BASE + usize::from(ptr);
    let rest = image.get(start..).ok_or(KernelError::NoVersion)?;
    let end = rest
        .iter()
        .take(512)
        .position(|b| *b == 0)
        .ok_or(KernelError::NoVersion)?;
    let s = String::from_utf8_lossy(&rest[..end]).trim().to_owned();
    if s.is_empty() {
        return Err(KernelError::NoVersion);
    }
    Ok(s)
}

/// The kernel release (`uname -r`): the first word of the version string.
pub fn release(image: &[u8]) -> Result<String, KernelError> {
    let version = version_string(image)?;
    version
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or(KernelError::NoVersion)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(version: &[u8]) -> Vec<u8> {
        let mut img = vec![0u8; 0x1000];
        img[HDRS_OFFSET..HDRS_OFFSET + 4].copy_from_slice(b"HdrS");
        let ptr: u16 = 0x400;
        img[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2].copy_from_slice(&ptr.to_le_bytes());
        let at = SETUP_BASE + usize::from(ptr);
        img[at..at + version.len()].copy_from_slice(version);
        img
    }

    #[test]
    fn reads_release() {
        let img = image(b"6.1.0-56-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0");
        assert_eq!(release(&img).expect("release"), "6.1.0-56-cloud-amd64");
        assert!(version_string(&img).expect("version").contains("#1 SMP"));
    }

    #[test]
    fn rejects_non_kernels() {
        assert!(matches!(release(b"short"), Err(KernelError::NotBzImage)));
        assert!(matches!(
            release(&vec![0u8; 0x1000]),
            Err(KernelError::NotBzImage)
        ));
        let mut img = image(b"x\0");
        img[VERSION_PTR_OFFSET] = 0;
        img[VERSION_PTR_OFFSET + 1] = 0;
        assert!(matches!(release(&img), Err(KernelError::NoVersion)));
        assert!(matches!(
            release(&image(b"\0")),
            Err(KernelError::NoVersion)
        ));
    }
}
