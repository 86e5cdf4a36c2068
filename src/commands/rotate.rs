//! `secretfs rotate`: new data keys for an open volume, without reformat.
//! For each member (one after the other): observe its token, plan its
//! rotation ([`crate::plan::rotate`], pure), and run the steps here, each
//! one header write: the next data key recorded, its key slot added and
//! checked, the token switched to it, the old slot destroyed. The volume
//! key and the data stay; the mapping stays open throughout. A member
//! killed half-way opens with the key its token names, and the next
//! `rotate` finishes it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tracing::info;

use super::{down, print_json, require_root};
use crate::cli::RotateArgs;
use crate::config;
use crate::error::{key_unavailable, refused, usage};
use crate::fault;
use crate::keys::data_key::DataKeys;
use crate::keys::Passphrase;
use crate::lock;
use crate::luks::header::{self, TokenFound};
use crate::luks::token::Token;
use crate::luks::{slots, update_token};
use crate::names;
use crate::observe::sys::Mapping;
use crate::plan;
use crate::plan::rotate::{plan_rotation, RotateStep, Rotation};
use crate::signals;

/// A device below the open volume that holds one of its headers.
pub struct Member {
    pub dev: PathBuf,
    pub uuid: String,
    pub token: Token,
}

/// The members of the open volume `name`, in member order, with their
/// tokens (read-only). Refused unless the volume is open: that it opened
/// proves every member is there and ours.
pub fn open_members(root: &Path, name: &str, what: &str) -> Result<Vec<Member>> {
    let obs = down::observe(root, name)?;
    if !matches!(obs.mapping, Mapping::Open { .. }) {
        return refused(format!(
            "{} is not open: {what} works on an open volume (run `secretfs up` first)",
            names::mapper_path(name).display()
        ));
    }
    let mut members = Vec::new();
    for u in plan::below(&obs) {
        let dev = u.dev.path.clone();
        let h = header::read(&dev)?
            .with_context(|| format!("{} holds no LUKS2 header", dev.display()))?;
        let token = match h.token {
            TokenFound::Present { token, .. } => token,
            TokenFound::Absent => {
                return refused(format!(
                "the volume on {} has no secretfs token (made before tokens, or not by secretfs): \
                     it has no data key to {what}",
                dev.display()
            ))
            }
            TokenFound::Unreadable { reason } => {
                return refused(format!("the token on {}: {reason}", dev.display()))
            }
        };
        members.push(Member {
            dev,
            uuid: h.uuid,
            token: *token,
        });
    }
    if members.is_empty() {
        return refused(format!(
            "found no device below {}",
            names::mapper_path(name).display()
        ));
    }
    members.sort_by_key(|m| m.token.member);
    Ok(members)
}

/// What a member's rotation did.
#[derive(Debug, Serialize)]
struct Rotated {
    device: PathBuf,
    luks_uuid: String,
    /// An interrupted rotation was finished.
    resumed: bool,
    /// The key slot the old data key opened (destroyed).
    old_slot: Option<u32>,
    /// The key slot the new data key opens.
    slot: u32,
    /// The KMS key that wraps the new data key.
    kms_key: String,
}

/// `secretfs rotate`.
pub fn run(args: &RotateArgs) -> Result<()> {
    let (v, opts) = config::volume_and_aws(&args.volume, &args.aws, args.json)?;
    if opts.kms_key_id.is_some() {
        return usage(
            "rotate takes no --kms-key-id: each data key is pinned to the KMS key its token names \
             (give --new-kms-key to move to another)",
        );
    }
    require_root("secretfs rotate")?;
    signals::install();
    let _lock = lock::acquire(&v.name, down::LOCK_WAIT)?;
    let members = open_members(Path::new("/"), &v.name, "rotate")?;
    // Every member is planned before any is changed.
    let mut rotations = Vec::new();
    for m in &members {
        rotations.push(plan_rotation(&m.dev, &m.token).or_else(refused)?);
    }
    let keys = DataKeys::for_existing(opts);
    let mut done = Vec::new();
    for (m, r) in members.iter().zip(rotations) {
        signals::check()?;
        let d = rotate_member(&keys, m, &r, args.new_kms_key.as_deref())?;
        info!(
            "{} the data key of {} (LUKS2 {}): key slot {} now, {}, wrapped by {}",
            if r.resumes {
                "finished the interrupted rotation of"
            } else {
                "rotated"
            },
            m.dev.display(),
            m.uuid,
            d.slot,
            match d.old_slot {
                Some(s) => format!("slot {s} destroyed"),
                None => "no old slot left".into(),
            },
            d.kms_key
        );
        done.push(d);
    }
    if v.json {
        print_json(
            &json!({"command": "rotate", "ok": true, "outcome": "rotated", "name": v.name, "members": done}),
        )?;
    }
    Ok(())
}

/// Runs one member's rotation. What the steps need of the token is known
/// from the observed token and the steps run before: the lock keeps
/// everyone else off the header meanwhile.
fn rotate_member(
    keys: &DataKeys,
    m: &Member,
    r: &Rotation,
    new_kms_key: Option<&str>,
) -> Result<Rotated> {
    let dev = &m.dev;
    let cur_key = m.token.data_key.clone().context("no data key")?;
    let cur = keys.open(&m.uuid, &cur_key)?;
    let Some(cur_slot) = slots::opened_by(dev, &cur)? else {
        return key_unavailable(format!(
            "the data key in the token of {} opens no key slot: the header is damaged; nothing was changed",
            dev.display()
        ));
    };
    // The next key's record, and its plaintext once made or opened.
    let mut next_key = m.token.next_key.as_deref().cloned();
    let mut next: Option<Passphrase> = None;
    let mut retire = m.token.retire_slot;
    let mut slot = cur_slot;
    let mut old_slot = None;
    let mut wrapped_by = cur_key.kms_key.clone();
    for &step in &r.steps {
        match step {
            RotateStep::MakeNext => {
                let under = new_kms_key.unwrap_or(&cur_key.kms_key);
                let (p, w) = keys.make_under(&m.uuid, under, cur_key.instance)?;
                // Decrypted as `up` will decrypt it, before it is recorded.
                if !keys.prove(&m.uuid, &w, "the rotation")?.same_as(&p) {
                    return key_unavailable(format!(
                        "the rotation of {} stopped before any change: KMS decrypted the new data \
                         key under {} to other bytes than it generated",
                        dev.display(),
                        w.kms_key
                    ));
                }
                update_token(dev, |t| t.next_key = Some(Box::new(w.clone())))?;
                next_key = Some(w);
                next = Some(p);
            }
            RotateStep::AddSlot => {
                let p = match next.take() {
                    Some(p) => p,
                    None => keys.open(
                        &m.uuid,
                        next_key.as_ref().context("no next key in the token")?,
                    )?,
                };
                slot = match slots::opened_by(dev, &p)? {
                    Some(s) => s,
                    None => {
                        let s = slots::add(dev, &cur, &p)?;
                        fault::point("rotate_slot_written");
                        if slots::opened_by(dev, &p)? != Some(s) {
                            anyhow::bail!(
                                "the new key slot {s} of {} does not open with the new data key",
                                dev.display()
                            );
                        }
                        s
                    }
                };
                if slot == cur_slot {
                    anyhow::bail!(
                        "the new data key opens the current key slot {slot} of {}",
                        dev.display()
                    );
                }
            }
            RotateStep::Switch => {
                let n = next_key.take().context("no next key to switch to")?;
                wrapped_by = n.kms_key.clone();
                update_token(dev, |t| {
                    t.next_key = None;
                    t.data_key = Some(n);
                    t.retire_slot = Some(cur_slot);
                })?;
                retire = Some(cur_slot);
            }
            RotateStep::Retire => {
                if let Some(s) = retire {
                    if s != slot && slots::in_use(dev, s)? {
                        slots::destroy(dev, s)?;
                        old_slot = Some(s);
                        fault::point("rotate_slot_destroyed");
                    }
                }
                update_token(dev, |t| t.retire_slot = None)?;
            }
        }
        fault::point(step.name());
    }
    Ok(Rotated {
        device: dev.clone(),
        luks_uuid: m.uuid.clone(),
        resumed: r.resumes,
        old_slot,
        slot,
        kms_key: wrapped_by,
    })
}
