//! secretfs: encrypted scratch storage on EC2 instance store, keyed by KMS.
//!
//! `main` is thin over [`commands`], one module per subcommand. Each
//! command builds its settings ([`config`] → [`settings`]), observes the
//! machine read-only ([`observe`]), plans purely ([`plan`]), fetches the
//! key only if a step needs it ([`keys`]) and runs the plan with the one
//! executor ([`exec`]), which calls down into [`device`], [`luks`], [`stripe`], [`fs`]
//! and [`cmd`]; a set's members are formatted in child processes of this
//! binary ([`member`]).

pub mod cli;
pub mod cmd;
pub mod commands;
pub mod config;
pub mod device;
pub mod error;
pub mod exec;
pub mod fault;
pub mod fs;
pub mod keys;
pub mod lock;
pub mod luks;
pub mod member;
pub mod names;
pub mod observe;
pub mod parallel;
pub mod parse;
pub mod perm;
pub mod plan;
pub mod settings;
pub mod signals;
pub mod stripe;
