//! vc-host
