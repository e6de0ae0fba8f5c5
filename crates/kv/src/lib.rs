//! Concord DB.
#![deny(missing_docs)]

pub mod loadgen;
pub mod pb;
