//! The host tier: everything that needs neither root nor a guest, in one
//! test binary (one link of the crate and its dependencies): the binary's
//! contract without root (`cli`), the parsers' properties (`fuzz`), the
//! AWS paths against moto on 127.0.0.1 (`aws`), a boot storm of
//! `check-key` runs against a rate-limited KMS (`storm`) and the example
//! IAM and key policies, linted and read (`policy`).

#[path = "../common/mod.rs"]
mod common;

mod aws;
mod cli;
mod fuzz;
mod policy;
mod storm;
