//! `secretfs seal`: have KMS make and wrap a passphrase (or wrap the one
//! given), store the blob.

use anyhow::Result;
use serde_json::json;
use tracing::warn;

use super::print_json;
use crate::cli::SealArgs;
use crate::config;
use crate::keys::aws::{self, Plain};
use crate::keys::{KeySource, PassphraseFile, GENERATED_LEN, HIGH_ENTROPY_MIN};

/// `secretfs seal`.
pub fn run(args: &SealArgs) -> Result<()> {
    let opts = config::aws_options(&args.aws)?;
    let given = match &args.passphrase_file {
        Some(p) => Some(PassphraseFile(p.clone()).fetch(false)?),
        None => None,
    };
    let plain = match &given {
        Some(p) => Plain::Given(p),
        None => Plain::Generated(GENERATED_LEN),
    };
    if let Some(p) = &given {
        if p.len() < HIGH_ENTROPY_MIN {
            warn!("the passphrase is {} bytes; `up --pbkdf auto` will protect it with argon2id, not PBKDF2", p.len());
        }
    }
    let sealed = aws::block_on(aws::seal(plain, &args.kms_key, &args.to, &opts, args.force))?;
    drop(given);
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
