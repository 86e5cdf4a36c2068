//! secretfs: see `secretfs --help` and README.md.

use std::process::ExitCode;

use clap::Parser;
use secretfs::{cli::Cli, commands, error};

fn main() -> ExitCode {
    let cli = Cli::parse_from(secretfs::cli::args());
    commands::init(&cli);
    match commands::run(&cli) {
        Ok(()) => ExitCode::from(error::EXIT_OK),
        Err(e) => {
            let code = error::exit_code_of(&e);
            if commands::wants_json(&cli) {
                commands::print_error_json(&cli, &e, code);
            }
            // One line: the whole context chain, outermost first.
            eprintln!("secretfs: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
