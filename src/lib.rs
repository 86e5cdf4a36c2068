//! secretfs: encrypted scratch storage on EC2 instance store, keyed by KMS.
//!
//! The binary is a thin `main` over [`app`]. The flow of `up` is observe
//! ([`probe`]) → plan ([`plan`], pure) → fetch the key if a step needs it
//! ([`keys`]) → execute ([`app`], with [`device`], [`luks`], [`fs`]).

pub mod app;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod device;
pub mod error;
pub mod fault;
pub mod fs;
pub mod keys;
pub mod luks;
pub mod names;
pub mod parse;
pub mod plan;
pub mod probe;
