//! The real-kernel tier: every test that boots a Debian kernel under QEMU
//! (tests/common/vm.rs) against the built binary, in one test binary (one
//! link of the crate and its dependencies). One module per group; run one
//! with `scripts/test --tier NAME` (a module name below). VMs run one at a
//! time (`--test-threads=1`; a lock file serializes them anyway).

#[path = "../common/mod.rs"]
mod common;

mod aarch64;
mod crash;
mod data_key;
mod demo;
mod ephemeral;
mod hardening;
mod hygiene;
mod safety;
mod set;
mod set_edges;
mod smoke;
mod vm;
