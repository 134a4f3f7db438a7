//! guest-image
