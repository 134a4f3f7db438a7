//! End-to-end tests of vc live in `tests/`; this crate has no library code.
