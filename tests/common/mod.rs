#![allow(dead_code)]
//! Helpers shared by the integration tests.

pub mod aws;
pub mod vm;
