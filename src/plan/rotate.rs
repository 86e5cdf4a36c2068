//! `secretfs rotate` and `secretfs rewrap`, planned for each member from
//! its token alone (pure).
//!
//! A rotation gives a volume a new data key without touching its volume
//! key or its data: a key slot for the new key is added before the old one
//! is destroyed. Each step is one header write and the token records how
//! far the rotation got, so a rotation killed at any point leaves a volume
//! that `up` opens with the key the token's `data_key` names (the old one
//! until [`RotateStep::Switch`], the new one from then on), and the next
//! `rotate` finishes it:
//!
//! | token of the member | steps |
//! |---|---|
//! | `ephemeral` | refused: it has no key slot and no key to rotate |
//! | no `data_key` | refused: it opens with a shared passphrase |
//! | `data_key` only | `MakeNext`, `AddSlot`, `Switch`, `Retire` |
//! | `next_key` (killed after `MakeNext` or `AddSlot`) | `AddSlot` (adds none if the next key opens a slot already), `Switch`, `Retire` |
//! | `retire_slot` (killed after `Switch` or the destroy) | `Retire` |
//!
//! A re-wrap changes only the token's ciphertext (KMS ReEncrypt): one
//! header write, nothing to resume; it waits for an interrupted rotation
//! to be finished first.

use std::path::Path;

use crate::luks::token::Token;

/// One step of a member's rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotateStep {
    /// Have KMS make the next data key (the same encryption context) and
    /// record it in the token as `next_key`.
    MakeNext,
    /// Add a key slot for the next key, opened with the current one,
    /// unless the next key opens a slot already; check that it opens.
    AddSlot,
    /// Make the next key the token's `data_key`, and record the current
    /// key's slot as `retire_slot`.
    Switch,
    /// Destroy `retire_slot` (unless it is gone, or is the slot the data
    /// key opens) and clear it.
    Retire,
}

impl RotateStep {
    /// The step's name in logs and fault points.
    pub fn name(self) -> &'static str {
        match self {
            RotateStep::MakeNext => "rotate_make_next",
            RotateStep::AddSlot => "rotate_add_slot",
            RotateStep::Switch => "rotate_switch",
            RotateStep::Retire => "rotate_retire",
        }
    }
}

/// A member's rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub steps: Vec<RotateStep>,
    /// An earlier rotation was interrupted and these steps finish it.
    pub resumes: bool,
}

/// The rotation of the member on `dev` whose token is `t`; the message
/// says why it cannot be rotated.
pub fn plan_rotation(dev: &Path, t: &Token) -> Result<Rotation, String> {
    use RotateStep::*;
    if t.data_key.is_none() {
        return Err(no_data_key(dev, t));
    }
    let (steps, resumes) = match (&t.next_key, t.retire_slot) {
        (Some(_), _) => (vec![AddSlot, Switch, Retire], true),
        (None, Some(_)) => (vec![Retire], true),
        (None, None) => (vec![MakeNext, AddSlot, Switch, Retire], false),
    };
    Ok(Rotation { steps, resumes })
}

/// Whether the member on `dev` whose token is `t` can be re-wrapped; the
/// message says why not.
pub fn check_rewrap(dev: &Path, t: &Token) -> Result<(), String> {
    if t.data_key.is_none() {
        return Err(no_data_key(dev, t));
    }
    if t.next_key.is_some() || t.retire_slot.is_some() {
        return Err(format!(
            "a rotation of the volume on {} was interrupted: run `secretfs rotate` to finish it, then rewrap",
            dev.display()
        ));
    }
    Ok(())
}

fn no_data_key(dev: &Path, t: &Token) -> String {
    if t.ephemeral {
        return format!(
            "the volume on {} is ephemeral: it has no key slot and no key to rotate or re-wrap \
             (it gets a new random key every time it is made)",
            dev.display()
        );
    }
    format!(
        "the volume on {} has no data key in its header: it opens with a shared passphrase \
         (--wrapped-key or --passphrase-file); re-wrap that blob with `secretfs rewrap --wrapped-key`",
        dev.display()
    )
}

#[cfg(test)]
mod tests {
    use super::RotateStep::*;
    use super::*;
    use crate::keys::data_key::WrappedKey;

    fn wrapped(c: &str) -> WrappedKey {
        WrappedKey {
            kms_key: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
            ciphertext: c.into(),
            instance: false,
            context_keys: None,
            scope: crate::keys::data_key::Scope::Volume,
        }
    }

    /// The state table of the module comment, row by row.
    #[test]
    fn each_token_state_plans_its_rotation() {
        let dev = Path::new("/dev/nvme1n1");
        let shared = Token::formatting("u");
        let cur = Token::formatting("u").with_data_key(wrapped("A"));
        let made_next = Token {
            next_key: Some(Box::new(wrapped("B"))),
            ..cur.clone()
        };
        let switched = Token {
            data_key: Some(wrapped("B")),
            retire_slot: Some(0),
            ..cur.clone()
        };
        let ephemeral = Token::formatting("u").ephemeral();
        type Want = Result<(Vec<RotateStep>, bool), &'static str>;
        let rows: [(&Token, Want); 5] = [
            (&ephemeral, Err("is ephemeral")),
            (&shared, Err("shared passphrase")),
            (&cur, Ok((vec![MakeNext, AddSlot, Switch, Retire], false))),
            (&made_next, Ok((vec![AddSlot, Switch, Retire], true))),
            (&switched, Ok((vec![Retire], true))),
        ];
        for (t, want) in rows {
            let got = plan_rotation(dev, t);
            match want {
                Ok((steps, resumes)) => {
                    assert_eq!(got, Ok(Rotation { steps, resumes }), "{t:?}")
                }
                Err(m) => assert!(got.unwrap_err().contains(m), "{t:?}"),
            }
        }
        assert_eq!(check_rewrap(dev, &cur), Ok(()));
        for t in [&made_next, &switched] {
            assert!(check_rewrap(dev, t)
                .unwrap_err()
                .contains("secretfs rotate"));
        }
        assert!(check_rewrap(dev, &shared)
            .unwrap_err()
            .contains("--wrapped-key"));
        assert!(check_rewrap(dev, &ephemeral)
            .unwrap_err()
            .contains("is ephemeral"));
    }

    #[test]
    fn a_rotating_token_round_trips_and_stays_version_3() {
        let t = Token {
            next_key: Some(Box::new(wrapped("B"))),
            retire_slot: Some(1),
            ..Token::formatting("u").with_data_key(wrapped("A"))
        };
        let v = t.to_json();
        assert_eq!(v["version"], 3);
        assert_eq!(v["next_key"]["ciphertext"], "B");
        assert_eq!(Token::from_json(&v).unwrap(), t);
        let plain = Token::formatting("u").with_data_key(wrapped("A")).to_json();
        assert!(plain.get("next_key").is_none() && plain.get("retire_slot").is_none());
    }
}
