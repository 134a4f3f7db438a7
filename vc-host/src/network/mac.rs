//! An Ethernet address: what a namespace's interface has, and the guest's
//! interface mirroring it gets.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An Ethernet address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address string that does not parse.
#[derive(Debug, Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct MacAddrError(String);

impl FromStr for MacAddr {
    type Err = MacAddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| MacAddrError(s.to_owned()))?;
            if part.len() != 2 {
                return Err(MacAddrError(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| MacAddrError(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(MacAddrError(s.to_owned()));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = MacAddrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips() {
        let m: MacAddr = "02:00:c0:00:02:0a".parse().expect("mac");
        assert_eq!(m.0, [2, 0, 0xc0, 0, 2, 0x0a]);
        assert_eq!(m.to_string(), "02:00:c0:00:02:0a");
        let json = serde_json::to_string(&m).expect("ser");
        assert_eq!(json, "\"02:00:c0:00:02:0a\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).expect("de"), m);
        for bad in [
            "",
            "02:00:c0:00:02",
            "02:00:c0:00:02:0a:0b",
            "2:0:c0:0:2:a",
            "zz:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
