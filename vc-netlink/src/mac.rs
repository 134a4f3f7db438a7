//! MAC addresses as people read them.

use std::fmt;

/// A MAC address formatted as `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_lowercase_hex_with_colons() {
        let mac = super::Mac([0x02, 0xab, 0, 0x10, 0xff, 0x7]);
        assert_eq!(mac.to_string(), "02:ab:00:10:ff:07");
    }
}
