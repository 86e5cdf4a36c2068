//! `secretfs rewrap`: move a wrapped key to another KMS key with KMS
//! ReEncrypt, so the plaintext never reaches this host. With
//! `--wrapped-key`, the blob in S3 or a file (no volume, no root needed);
//! without, the data key in the token of every member of the open volume
//! (one header write each, checked by [`crate::plan::rotate::check_rewrap`]
//! for every member before any is changed). The volume key, the key slots
//! and the data stay as they are.

use std::path::Path;

use anyhow::Result;
use serde_json::json;
use tracing::info;

use super::rotate::open_members;
use super::{down, print_json, require_root};
use crate::cli::RewrapArgs;
use crate::config;
use crate::error::{key_unavailable, refused};
use crate::keys::aws;
use crate::keys::data_key::{DataKeys, Scope, WrappedKey};
use crate::keys::rewrap::rewrap_blob;
use crate::keys::Passphrase;
use crate::lock;
use crate::luks::{slots, update_token};
use crate::plan::rotate::check_rewrap;
use crate::signals;

/// `secretfs rewrap`.
pub fn run(args: &RewrapArgs) -> Result<()> {
    let (v, opts) = config::volume_and_aws(&args.volume, &args.aws, args.json)?;
    if let Some(from) = &args.wrapped_key {
        let to = args.to.as_ref().unwrap_or(from);
        let r = aws::block_on(rewrap_blob(from, to, &args.new_kms_key, &opts, args.force))?;
        if v.json {
            print_json(
                &json!({"command": "rewrap", "ok": true, "outcome": "rewrapped", "blob": r}),
            )?;
        } else {
            eprintln!(
                "re-wrapped {} under {} into {} (was {}); the passphrase inside is the same{}",
                r.from,
                r.key_id,
                r.to,
                r.from_key_id,
                if args.to.is_some() {
                    ": point --wrapped-key at the new blob"
                } else {
                    ""
                }
            );
        }
        return Ok(());
    }
    require_root("secretfs rewrap")?;
    signals::install();
    let _lock = lock::acquire(&v.name, down::LOCK_WAIT)?;
    let members = open_members(Path::new("/"), &v.name, "rewrap")?;
    for m in &members {
        check_rewrap(&m.dev, &m.token).or_else(refused)?;
    }
    let keys = DataKeys::for_existing(opts);
    // Every member's new record is made and proven (decrypted as `up`
    // will, and opening its key slot) before any header is changed. A
    // set's one data key is re-wrapped once, and that record proven on
    // every member: they all end with the same record.
    let mut rewrapped: Vec<WrappedKey> = Vec::new();
    let mut set_record: Option<(WrappedKey, Passphrase)> = None;
    for m in &members {
        signals::check()?;
        let w = m.token.data_key.as_ref().expect("checked above");
        let owner = m.token.key_owner(&m.uuid, w)?;
        let (new, p) = match (&set_record, w.scope) {
            (Some((r, p)), Scope::Set) => (r.clone(), Passphrase::from_slice(p.expose())),
            _ => {
                let new = keys.rewrap(owner, w, &args.new_kms_key)?;
                let p = keys.prove(owner, &new, "the re-wrap")?;
                (new, p)
            }
        };
        if w.scope == Scope::Set && set_record.is_none() {
            set_record = Some((new.clone(), Passphrase::from_slice(p.expose())));
        }
        if slots::opened_by(&m.dev, &p)?.is_none() {
            return key_unavailable(format!(
                "the re-wrap stopped before any change: the data key KMS re-wrapped under {} \
                 opens no key slot of {}",
                new.kms_key,
                m.dev.display()
            ));
        }
        rewrapped.push(new);
    }
    let mut done = Vec::new();
    for (m, new) in members.iter().zip(rewrapped) {
        signals::check()?;
        let w = m.token.data_key.as_ref().expect("checked above");
        let to = new.kms_key.clone();
        update_token(&m.dev, |t| t.data_key = Some(new))?;
        info!(
            "re-wrapped the data key of {} (LUKS2 {}) under {to} (was {})",
            m.dev.display(),
            m.uuid,
            w.kms_key
        );
        done.push(
            json!({"device": m.dev, "luks_uuid": m.uuid, "from_kms_key": w.kms_key, "kms_key": to}),
        );
    }
    info!(
        "new volumes are still made under the config's kms-key: set kms-key = \"{}\" there to make them under the new key",
        args.new_kms_key
    );
    if v.json {
        print_json(
            &json!({"command": "rewrap", "ok": true, "outcome": "rewrapped", "name": v.name, "members": done}),
        )?;
    }
    Ok(())
}
