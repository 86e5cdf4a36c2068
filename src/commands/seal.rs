//! `secretfs seal`: make a passphrase, wrap it with KMS, store the blob.

use anyhow::Result;
use serde_json::json;
use tracing::warn;

use super::print_json;
use crate::cli::SealArgs;
use crate::config;
use crate::keys::aws;
use crate::keys::{KeySource, Passphrase, PassphraseFile, GENERATED_LEN, HIGH_ENTROPY_MIN};

/// `secretfs seal`.
pub fn run(args: &SealArgs) -> Result<()> {
    let opts = config::aws_options(&args.aws)?;
    let pass = match &args.passphrase_file {
        Some(p) => PassphraseFile(p.clone()).fetch(false)?,
        None => Passphrase::generate(GENERATED_LEN)?,
    };
    if pass.len() < HIGH_ENTROPY_MIN {
        warn!("the passphrase is {} bytes; `up --pbkdf auto` will protect it with argon2id, not PBKDF2", pass.len());
    }
    let sealed = aws::block_on(aws::seal(&pass, &args.kms_key, &args.to, &opts, args.force))?;
    drop(pass);
    if args.json {
        print_json(&json!({"command": "seal", "ok": true, "sealed": sealed}))?;
    } else {
        eprintln!(
            "sealed a {}-byte passphrase under {} into {} ({} bytes)",
            sealed.passphrase_bytes, sealed.key_id, sealed.to, sealed.blob_bytes
        );
    }
    Ok(())
}
