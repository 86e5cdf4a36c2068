//! Re-wrapping under another KMS key (`secretfs rewrap`) with KMS
//! ReEncrypt, which decrypts and encrypts again inside KMS. For a blob in
//! S3 or a file ([`rewrap_blob`]) and for the data keys in volumes'
//! headers ([`super::data_key::DataKeys::rewrap`]). The encryption context
//! stays the same. Before the new ciphertext replaces the old one it is
//! proven: KMS decrypts it under the new key, as every boot will, into
//! locked memory, and it must hold the same secret (a blob: the old blob's
//! passphrase; a data key: it opens the volume's key slot). A role that
//! may re-encrypt but not decrypt under the new key is refused (exit 4)
//! with nothing changed, instead of every later boot.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::Result;
use aws_config::SdkConfig;
use aws_sdk_kms::primitives::Blob;
use tracing::info;

use super::aws::{
    classify, fetch_ciphertext, open_ciphertext, refuse_existing, retry, write_private, Attempt,
    AwsOptions, Sdk, Service,
};
use crate::error::key_unavailable;
use crate::parse::BlobLocation;

/// A ciphertext KMS re-encrypted.
pub struct ReEncrypted {
    pub ciphertext: Vec<u8>,
    /// The ARN of the key it is wrapped by now.
    pub key_arn: String,
    /// The ARN of the key it was wrapped by.
    pub source_arn: String,
}

async fn re_encrypt_once(
    cfg: &SdkConfig,
    ciphertext: &[u8],
    source_key: Option<&str>,
    ctx: &BTreeMap<String, String>,
    new_key: &str,
    what: &str,
) -> Result<ReEncrypted, Attempt> {
    let kms = aws_sdk_kms::Client::new(cfg);
    let ctx: HashMap<String, String> = ctx.clone().into_iter().collect();
    let ctx = (!ctx.is_empty()).then_some(ctx);
    let out = kms
        .re_encrypt()
        .ciphertext_blob(Blob::new(ciphertext))
        .set_source_key_id(source_key.map(str::to_owned))
        .set_source_encryption_context(ctx.clone())
        .destination_key_id(new_key)
        .set_destination_encryption_context(ctx)
        .send()
        .await
        .map_err(|e| classify(&e, what, Service::Kms))?;
    Ok(ReEncrypted {
        ciphertext: out
            .ciphertext_blob
            .ok_or_else(|| Attempt::Fatal("KMS returned no ciphertext".into()))?
            .into_inner(),
        key_arn: out.key_id.unwrap_or_else(|| new_key.to_string()),
        source_arn: out.source_key_id.unwrap_or_default(),
    })
}

/// Has KMS re-encrypt `ciphertext` (wrapped by `source_key` if given,
/// bound to `ctx`; `what` names it) under `new_key`, by `deadline`.
pub(super) async fn re_encrypt(
    sdk: &Sdk<'_>,
    deadline: Instant,
    ciphertext: &[u8],
    source_key: Option<&str>,
    ctx: &BTreeMap<String, String>,
    new_key: &str,
    what: &str,
) -> Result<ReEncrypted> {
    sdk.call(
        deadline,
        &format!("re-encrypting {what} under KMS key {new_key}"),
        |cfg| async move {
            re_encrypt_once(&cfg, ciphertext, source_key, ctx, new_key, what).await
        },
    )
    .await
}

/// Proves the re-wrapped blob before it is stored: KMS decrypts it under
/// its new key with the same context, as every boot will, and it holds
/// the same passphrase as the old blob (compared in constant time, in
/// locked memory). A refusal (exit 4) names the permission the caller
/// lacks; nothing has been written yet.
async fn prove_blob(
    sdk: &Sdk<'_>,
    deadline: Instant,
    old: &[u8],
    opts: &AwsOptions,
    r: &ReEncrypted,
    what: &str,
) -> Result<()> {
    let stopped = |e: anyhow::Error, which: &str, key: &str| {
        key_unavailable::<()>(format!(
            "the re-wrap of {what} stopped before anything was written: the {which} blob does not \
             decrypt under KMS key {key} ({}); every boot needs kms:Decrypt on the new key with \
             this encryption context, and the proof needs it on the old one too: grant it, then run \
             rewrap again",
            super::aws::kms_said(&e)
        ))
    };
    let ctx = &opts.encryption_context;
    let open =
        |ciphertext, key| open_ciphertext(sdk, deadline, ciphertext, key, ctx, what, Service::Kms);
    let new = match open(&r.ciphertext, Some(&r.key_arn)).await {
        Ok(p) => p,
        Err(e) => return stopped(e, "re-wrapped", &r.key_arn),
    };
    let old_key = opts.kms_key_id.as_deref().unwrap_or(&r.source_arn);
    let old = match open(old, opts.kms_key_id.as_deref()).await {
        Ok(p) => p,
        Err(e) => return stopped(e, "old", old_key),
    };
    if !new.same_as(&old) {
        return key_unavailable(format!(
            "the re-wrap of {what} stopped before anything was written: the re-wrapped blob \
             decrypts to other bytes than the old one"
        ));
    }
    info!(blob = %what, key_id = %r.key_arn, "the re-wrapped blob decrypts to the same passphrase");
    Ok(())
}

/// What `rewrap --wrapped-key` wrote.
#[derive(Debug, serde::Serialize)]
pub struct Rewrapped {
    pub from: String,
    pub to: String,
    /// The key that wrapped the blob.
    pub from_key_id: String,
    /// The key that wraps it now.
    pub key_id: String,
    pub blob_bytes: usize,
}

/// Re-wraps the blob at `from` under `new_key` and stores it at `to`
/// (`from` itself: replaced in one write, the passphrase inside is the
/// same; another place: refused if it exists, unless `force`). The blob's
/// encryption context and `--kms-key-id` pin are `opts`'.
pub async fn rewrap_blob(
    from: &BlobLocation,
    to: &BlobLocation,
    new_key: &str,
    opts: &AwsOptions,
    force: bool,
) -> Result<Rewrapped> {
    let deadline = Instant::now() + opts.timeout;
    let sdk = Sdk::new(opts);
    let in_place = from == to;
    if !in_place && !force {
        refuse_existing(&sdk, to, deadline, opts.timeout).await?;
    }
    let ciphertext = fetch_ciphertext(&sdk, deadline, from).await?;
    let what = from.to_string();
    let r = re_encrypt(
        &sdk,
        deadline,
        &ciphertext,
        opts.kms_key_id.as_deref(),
        &opts.encryption_context,
        new_key,
        &what,
    )
    .await?;
    prove_blob(&sdk, deadline, &ciphertext, opts, &r, &what).await?;
    match to {
        BlobLocation::File(p) if in_place => {
            // Written beside it and renamed over it: the old blob stays
            // whole until the new one is.
            let mut tmp = p.as_os_str().to_owned();
            tmp.push(".secretfs-rewrap");
            let tmp = std::path::PathBuf::from(tmp);
            write_private(&tmp, &r.ciphertext, true)?;
            std::fs::rename(&tmp, p).map_err(|e| {
                anyhow::anyhow!("renaming {} over {}: {e}", tmp.display(), p.display())
            })?;
        }
        BlobLocation::File(p) => write_private(p, &r.ciphertext, force)?,
        BlobLocation::S3 { bucket, key } => {
            retry(deadline, opts.timeout, &format!("writing {to}"), || {
                sdk.put_object(bucket, key, &r.ciphertext)
            })
            .await?
        }
    }
    info!(from = %from, to = %to, from_key = %r.source_arn, key_id = %r.key_arn,
          "re-wrapped the blob with KMS ReEncrypt (the passphrase inside is unchanged)");
    Ok(Rewrapped {
        from: what,
        to: to.to_string(),
        from_key_id: r.source_arn,
        key_id: r.key_arn,
        blob_bytes: r.ciphertext.len(),
    })
}
