//! Seal a fresh random passphrase with KMS, store the blob in a file, and
//! unwrap it again through the same code `secretfs up` uses.
//!
//! Run against a local emulator (moto) or a real account:
//!
//! ```text
//! AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 \
//!   cargo run --example seal_and_unwrap -- alias/secretfs /tmp/volume-key.bin
//! ```
//!
//! Only lengths are printed, never the passphrase.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use secretfs::keys::aws::AwsOptions;
use secretfs::keys::aws::{block_on, seal, unwrap_key, Plain};
use secretfs::keys::{Passphrase, GENERATED_LEN};
use secretfs::parse::BlobLocation;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let kms_key = args
        .next()
        .context("usage: seal_and_unwrap KMS_KEY BLOB_PATH")?;
    let to = BlobLocation::File(
        args.next()
            .context("usage: seal_and_unwrap KMS_KEY BLOB_PATH")?
            .into(),
    );
    let opts = AwsOptions {
        kms_key_id: None,
        encryption_context: BTreeMap::from([(
            "purpose".to_string(),
            "secretfs-example".to_string(),
        )]),
        expected_bucket_owner: None,
        region: None,
        endpoint_url: None,
        allow_http: false,
        timeout: Duration::from_secs(30),
    };
    let pass = Passphrase::generate(GENERATED_LEN)?;
    let sealed = block_on(seal(Plain::Given(&pass), &kms_key, &to, &opts, false))?;
    println!(
        "sealed {} bytes under {} into {} ({} bytes)",
        sealed.passphrase_bytes, sealed.key_id, sealed.to, sealed.blob_bytes
    );
    let back = block_on(unwrap_key(&to, &opts))?;
    assert_eq!(back.expose(), pass.expose(), "the unwrapped key differs");
    println!(
        "unwrapped {} bytes; they match the sealed passphrase",
        back.len()
    );
    Ok(())
}
