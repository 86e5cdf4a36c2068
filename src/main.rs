//! secretfs: see `secretfs --help` and README.md.

use std::process::ExitCode;

use clap::Parser;
use secretfs::{app, cli::Cli, error};

fn main() -> ExitCode {
    let cli = Cli::parse();
    app::init(&cli);
    match app::run(&cli) {
        Ok(()) => ExitCode::from(error::EXIT_OK),
        Err(e) => {
            let code = error::exit_code_of(&e);
            if app::wants_json(&cli) {
                app::print_error_json(&cli, &e, code);
            }
            // One line: the whole context chain, outermost first.
            eprintln!("secretfs: error: {e:#}");
            ExitCode::from(code)
        }
    }
}
