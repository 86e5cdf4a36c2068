//! Data keys kept in the LUKS2 header (`up --kms-key`): every volume (every
//! member of a set) gets its own random passphrase, made by KMS
//! GenerateDataKey; its ciphertext goes into the volume's secretfs token
//! and its plaintext only into a locked [`Passphrase`]. Re-opening decrypts
//! the token's ciphertext with KMS. No S3 object is involved.
//!
//! The encryption context binds each ciphertext to its volume: it always
//! holds [`CONTEXT_VOLUME`] = the volume's LUKS UUID (a ciphertext copied
//! into another volume's header does not decrypt), with `--bind-instance`
//! also [`CONTEXT_INSTANCE`] = the instance id from IMDSv2 (the volume
//! opens only on the instance that made it), plus the operator's
//! `--encryption-context` pairs, which must be given again on every `up`.

use std::collections::BTreeMap;

use anyhow::Result;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::aws::{self, AwsOptions};
use super::Passphrase;
use crate::error::key_unavailable;

/// Encryption-context key that names the volume (its LUKS UUID).
pub const CONTEXT_VOLUME: &str = "secretfs:volume";
/// Encryption-context key that names the instance (`--bind-instance`).
pub const CONTEXT_INSTANCE: &str = "secretfs:instance";
/// Prefix of the context keys secretfs sets itself.
pub const CONTEXT_RESERVED: &str = "secretfs:";
/// Length of a data key: 64 random bytes, used as the key-slot passphrase
/// (PBKDF2 under `--pbkdf auto`: it needs no stretching).
pub const DATA_KEY_BYTES: usize = 64;

/// What a volume's token records of its data key (none of it secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// The ARN of the KMS key that wraps it (pinned on Decrypt).
    pub kms_key: String,
    /// The KMS ciphertext, base64.
    pub ciphertext: String,
    /// Whether the context holds the instance id (`--bind-instance`).
    #[serde(default)]
    pub instance: bool,
}

/// Makes and opens the data keys of `up --kms-key`.
pub struct DataKeys {
    pub kms_key: String,
    pub bind_instance: bool,
    pub opts: AwsOptions,
    instance: std::sync::OnceLock<String>,
}

impl DataKeys {
    pub fn new(kms_key: String, bind_instance: bool, opts: AwsOptions) -> DataKeys {
        DataKeys {
            kms_key,
            bind_instance,
            opts,
            instance: std::sync::OnceLock::new(),
        }
    }

    /// Names the key mode for log lines.
    pub fn describe(&self) -> String {
        format!(
            "a data key in each volume's header, wrapped by KMS key {}{}",
            self.kms_key,
            if self.bind_instance {
                " and bound to this instance"
            } else {
                ""
            }
        )
    }

    /// A new data key for the volume `volume` (its LUKS UUID).
    pub fn make(&self, volume: &str) -> Result<(Passphrase, WrappedKey)> {
        let ctx = self.context(volume, self.bind_instance)?;
        let k = aws::block_on(aws::new_data_key(
            &self.opts,
            &self.kms_key,
            DATA_KEY_BYTES,
            &ctx,
        ))?;
        info!(volume, kms_key = %k.key_arn, "KMS made the volume's data key");
        let wrapped = WrappedKey {
            kms_key: k.key_arn,
            ciphertext: base64::engine::general_purpose::STANDARD.encode(&k.ciphertext),
            instance: self.bind_instance,
        };
        Ok((k.pass, wrapped))
    }

    /// The data key of the volume `volume`, from its token's record.
    pub fn open(&self, volume: &str, w: &WrappedKey) -> Result<Passphrase> {
        let Ok(ciphertext) = base64::engine::general_purpose::STANDARD.decode(&w.ciphertext) else {
            return key_unavailable(format!(
                "the data key in the header of volume {volume} is not base64: the header is damaged"
            ));
        };
        let ctx = self.context(volume, w.instance)?;
        let p = aws::block_on(aws::open_data_key(
            &self.opts,
            &w.kms_key,
            &ciphertext,
            &ctx,
            &format!("the data key of volume {volume}"),
        ))?;
        info!(volume, "KMS decrypted the volume's data key");
        Ok(p)
    }

    /// The encryption context for `volume`.
    fn context(&self, volume: &str, with_instance: bool) -> Result<BTreeMap<String, String>> {
        let mut ctx = self.opts.encryption_context.clone();
        ctx.insert(CONTEXT_VOLUME.into(), volume.into());
        if with_instance {
            let id = match self.instance.get() {
                Some(id) => id.clone(),
                None => {
                    let id = aws::block_on(aws::instance_id(&self.opts))?;
                    self.instance.get_or_init(|| id).clone()
                }
            };
            ctx.insert(CONTEXT_INSTANCE.into(), id);
        }
        Ok(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_defaults_to_unbound() {
        let w = WrappedKey {
            kms_key: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
            ciphertext: "AAEC".into(),
            instance: true,
        };
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(serde_json::from_value::<WrappedKey>(v).unwrap(), w);
        let old = serde_json::json!({"kms_key": "k", "ciphertext": "AA=="});
        assert!(!serde_json::from_value::<WrappedKey>(old).unwrap().instance);
    }
}
