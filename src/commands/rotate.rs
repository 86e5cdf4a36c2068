//! `secretfs rotate`: a new data key for an open volume, without reformat.
//! For each member (one after the other): observe its token, plan its
//! rotation ([`crate::plan::rotate`], pure), and run the steps here, each
//! one header write: the next data key recorded, its key slot added and
//! checked, the token switched to it, the old slot destroyed. The volume
//! key and the data stay; the mapping stays open throughout. A member
//! killed half-way opens with the key its token names, and the next
//! `rotate` finishes it.
//!
//! A set is one volume with one data key: KMS makes the next key once,
//! for the set ([`Owner::Set`]), and every member records the same one. A
//! set made with a key per member is moved to one key this way. A
//! rotation killed half-way left the set's next key in a member's token
//! (as `next_key`, or as its `data_key` with the old slot still to
//! retire): the next `rotate` gives the remaining members that key, so
//! the set ends on one key whatever the point it was killed at.

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
use crate::keys::data_key::{DataKeys, Owner, Scope, WrappedKey};
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
    // The set's next data key, once made (or found recorded by a rotation
    // that was interrupted): every member that still needs one records it.
    let mut set_next = interrupted_set_key(&members);
    let mut done = Vec::new();
    for (m, r) in members.iter().zip(rotations) {
        signals::check()?;
        let d = rotate_member(&keys, m, &r, args.new_kms_key.as_deref(), &mut set_next)?;
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

/// The set key an interrupted rotation recorded in some member's token:
/// its `next_key`, or the `data_key` it switched to before its old slot
/// was retired.
fn interrupted_set_key(members: &[Member]) -> Option<WrappedKey> {
    let set = |w: &WrappedKey| w.scope == Scope::Set;
    let next = members
        .iter()
        .filter_map(|m| m.token.next_key.as_deref())
        .find(|w| set(w));
    let switched = members
        .iter()
        .filter(|m| m.token.retire_slot.is_some())
        .filter_map(|m| m.token.data_key.as_ref())
        .find(|w| set(w));
    next.or(switched).cloned()
}

/// Whose the member's new data key is: its set's (one for all members),
/// or the volume's.
fn new_owner(m: &Member) -> Owner<'_> {
    match &m.token.set {
        Some(set) => Owner::Set(set),
        None => Owner::Volume(&m.uuid),
    }
}

/// Runs one member's rotation. What the steps need of the token is known
/// from the observed token and the steps run before: the lock keeps
/// everyone else off the header meanwhile.
fn rotate_member(
    keys: &DataKeys,
    m: &Member,
    r: &Rotation,
    new_kms_key: Option<&str>,
    set_next: &mut Option<WrappedKey>,
) -> Result<Rotated> {
    let dev = &m.dev;
    let cur_key = m.token.data_key.clone().context("no data key")?;
    let cur = keys.open(m.token.key_owner(&m.uuid, &cur_key)?, &cur_key)?;
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
            RotateStep::MakeNext if set_next.is_some() && m.token.set.is_some() => {
                // The set's next key, made for an earlier member.
                let w = set_next.clone().expect("checked");
                let p = keys.open(m.token.key_owner(&m.uuid, &w)?, &w)?;
                update_token(dev, |t| t.next_key = Some(Box::new(w.clone())))?;
                next_key = Some(w);
                next = Some(p);
            }
            RotateStep::MakeNext => {
                let under = new_kms_key.unwrap_or(&cur_key.kms_key);
                let owner = new_owner(m);
                let (p, w) = keys.make_under(owner, under, cur_key.instance)?;
                // Decrypted as `up` will decrypt it, before it is recorded.
                if !keys.prove(owner, &w, "the rotation")?.same_as(&p) {
                    return key_unavailable(format!(
                        "the rotation of {} stopped before any change: KMS decrypted the new data \
                         key under {} to other bytes than it generated",
                        dev.display(),
                        w.kms_key
                    ));
                }
                update_token(dev, |t| t.next_key = Some(Box::new(w.clone())))?;
                if w.scope == Scope::Set {
                    *set_next = Some(w.clone());
                }
                next_key = Some(w);
                next = Some(p);
            }
            RotateStep::AddSlot => {
                let p = match next.take() {
                    Some(p) => p,
                    None => {
                        let w = next_key.as_ref().context("no next key in the token")?;
                        keys.open(m.token.key_owner(&m.uuid, w)?, w)?
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luks::token::Place;

    fn key(c: &str, scope: Scope) -> WrappedKey {
        WrappedKey {
            kms_key: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
            ciphertext: c.into(),
            instance: false,
            context_keys: None,
            scope,
        }
    }

    fn member(i: u32, t: impl FnOnce(&mut Token)) -> Member {
        let place = Place {
            set: "s1".into(),
            member: i,
            members: 2,
            chunk: 512 << 10,
        };
        let mut token =
            Token::member(&format!("u{i}"), &place).with_data_key(key("old", Scope::Set));
        t(&mut token);
        Member {
            dev: PathBuf::from(format!("/dev/vd{i}")),
            uuid: format!("u{i}"),
            token,
        }
    }

    /// Where a killed set rotation left the set's next key, a row per
    /// kill point: the members still without it get that key, not another.
    #[test]
    fn an_interrupted_set_rotation_hands_its_key_to_the_other_members() {
        let next = key("next", Scope::Set);
        let settled = |_: &mut Token| {};
        let recorded = |t: &mut Token| t.next_key = Some(Box::new(key("next", Scope::Set)));
        let switched = |t: &mut Token| {
            t.data_key = Some(key("next", Scope::Set));
            t.retire_slot = Some(0);
        };
        let done = |t: &mut Token| t.data_key = Some(key("next", Scope::Set));
        let rows: [(Vec<Member>, Option<&WrappedKey>); 5] = [
            (vec![member(0, settled), member(1, settled)], None),
            (vec![member(0, recorded), member(1, settled)], Some(&next)),
            (vec![member(0, switched), member(1, settled)], Some(&next)),
            (vec![member(0, done), member(1, recorded)], Some(&next)),
            // A member rotated to the end before the kill: nothing says
            // whose key is newer, so a new one is made for all.
            (vec![member(0, done), member(1, settled)], None),
        ];
        for (members, want) in rows {
            assert_eq!(
                interrupted_set_key(&members).as_ref(),
                want,
                "{:?}",
                members.iter().map(|m| &m.token).collect::<Vec<_>>()
            );
        }
        // A per-member next key (a rotation by an older secretfs) is the
        // member's own: it is finished, not handed on.
        let own = member(0, |t| {
            t.next_key = Some(Box::new(key("own", Scope::Volume)))
        });
        assert_eq!(interrupted_set_key(&[own]), None);
        // The new key of a member is its set's; of a lone volume, its own.
        let m = member(1, settled);
        assert_eq!(new_owner(&m), Owner::Set("s1"));
        let lone = Member {
            token: Token::formatting("u9"),
            uuid: "u9".into(),
            dev: PathBuf::from("/dev/vdz"),
        };
        assert_eq!(new_owner(&lone), Owner::Volume("u9"));
    }
}
