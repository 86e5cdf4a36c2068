//! `secretfs check-key`: fetch and decrypt the wrapped key as `up` would.

use anyhow::Result;
use serde_json::json;

use super::print_json;
use crate::cli::CheckKeyArgs;
use crate::config;
use crate::keys::aws::KmsWrappedKey;
use crate::keys::KeySource;

/// `secretfs check-key`.
pub fn run(args: &CheckKeyArgs) -> Result<()> {
    let src = KmsWrappedKey {
        location: args.wrapped_key.clone(),
        opts: config::aws_options(&args.aws)?,
    };
    let p = src.fetch(false)?;
    let n = p.len();
    drop(p);
    if args.json {
        print_json(
            &json!({"command": "check-key", "ok": true, "source": args.wrapped_key.to_string(), "bytes": n}),
        )?;
    } else {
        eprintln!("ok: {} decrypts to a {n}-byte passphrase", args.wrapped_key);
    }
    Ok(())
}
