//! A deterministic in-crate test harness (filled in below).
