//! `secretfs generate DIR` (hidden): the man pages and the bash, zsh and
//! fish completions, made from the clap definitions in `cli.rs`. `doc/`
//! holds the committed copy; a CLI test regenerates it and fails on any
//! difference, so the two never drift.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};

/// `secretfs generate DIR`: DIR/man/*.1 and DIR/completions/*.
pub fn run(args: &GenerateArgs) -> Result<()> {
    write_all(&args.dir)
}

/// Writes every generated file under `dir`.
pub fn write_all(dir: &Path) -> Result<()> {
    // The plain version: the commit in `--version` would change every page
    // on every commit.
    let cmd = Cli::command().version(env!("CARGO_PKG_VERSION"));
    let man = dir.join("man");
    let completions = dir.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    clap_mangen::generate_to(cmd.clone(), &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "secretfs", &completions)
            .with_context(|| format!("writing {shell} completions to {}", completions.display()))?;
    }
    Ok(())
}
