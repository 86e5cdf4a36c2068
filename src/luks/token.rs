//! The record secretfs keeps in the LUKS2 header of every volume it makes:
//! a token of type [`names::TOKEN_TYPE`] whose JSON says what the volume
//! is and how far its making got. Pure: JSON in, JSON out.
//!
//! ```json
//! {"type": "secretfs", "keyslots": [], "version": 1,
//!  "volume": "<LUKS UUID>", "state": "ready", "filesystem": "ext4",
//!  "set": null, "member": null, "members": null}
//! ```
//!
//! - `state` is `formatting` from the header write until the first key
//!   slot exists, then `ready`. A header still `formatting` never held
//!   data: formatting it again is safe.
//! - `filesystem` is written only after mkfs succeeded. Until then the
//!   volume never held data either, and mkfs may run again; after it, an
//!   unrecognised filesystem is damage to repair, never to overwrite.
//! - `set`, `member`, `members`, `chunk` and `layout` place a volume in a
//!   striped set (unset for a single volume). A member's token is version
//!   2, so a secretfs that knows no sets refuses it rather than opening one
//!   member alone; while the set is being made every member stays
//!   `formatting` until all of them have a key slot.
//! - `data_key` holds the volume's own KMS-wrapped passphrase
//!   (`up --kms-key`, [`crate::keys::data_key`]); such a token is version
//!   3, so a secretfs without data keys refuses the volume instead of
//!   trying another key on it.
//!   A set made with `--kms-key` has one data key: every member's token
//!   carries the same record, with `scope: set` (its context names the
//!   set's id, read from the member's own `set`); such a token is version
//!   5, so a secretfs that knows only a key per member refuses the set
//!   instead of asking KMS with the wrong context.
//! - `next_key` and `retire_slot` are set only while `secretfs rotate`
//!   runs ([`crate::plan::rotate`]): the next data key, recorded before
//!   its key slot is added, and the previous key's slot, recorded when the
//!   next key became `data_key` and cleared once that slot is destroyed.
//!   `data_key` always names a key that opens a slot.
//! - `ephemeral` marks a volume made by `up --ephemeral`: it has no key
//!   slot, its volume key lived only in memory, and once it is closed (or
//!   the machine stopped) nothing can open it again. Such a token is
//!   version 4, so a secretfs that knows no ephemeral volumes refuses it
//!   rather than taking the missing key slot for a half-made header.
//! - `purpose` is `swap` on the ephemeral volume of `secretfs swap`
//!   (absent on volumes that hold a filesystem): `up` never takes it and
//!   `swap` never takes anything else.
//! - `disk` is the index N of a volume of one disk among a node's
//!   (`up --each-disk`), written with the header: it is opened as
//!   `NAME-diskN` and mounted at `MOUNT/N` whatever the kernel names the
//!   disk. The volume itself is a single volume, so the token keeps its
//!   version: a secretfs without `--each-disk` reads it as one.

use serde::{Deserialize, Serialize};

use crate::error::Failure;
use crate::keys::data_key::{Owner, Scope, WrappedKey};
use crate::names;

/// The token format of a single volume.
pub const TOKEN_VERSION: u32 = 1;
/// The token format of a member of a striped set.
pub const TOKEN_VERSION_SET: u32 = 2;
/// The token format of a volume (or member) with its data key in the
/// header.
pub const TOKEN_VERSION_DATA_KEY: u32 = 3;
/// The token format of an ephemeral volume (or member).
pub const TOKEN_VERSION_EPHEMERAL: u32 = 4;
/// The token format of a member whose data key is its set's
/// ([`Scope::Set`]), the newest this build understands.
pub const TOKEN_VERSION_SET_KEY: u32 = 5;

/// A set's layout: one LUKS2 per member, dm-stripe over the open members.
pub const LAYOUT_LUKS_PER_MEMBER: &str = "luks-per-member";

/// How far the making of the volume got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// Header written, key slot not yet: holds no data.
    Formatting,
    /// Key slot written: the volume opens with its key.
    Ready,
}

/// The token's content (without libcryptsetup's `type` and `keyslots`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub version: u32,
    /// The volume's UUID (the LUKS2 header's).
    pub volume: String,
    pub state: TokenState,
    /// The filesystem made inside, once mkfs succeeded.
    #[serde(default)]
    pub filesystem: Option<String>,
    /// The striped set this volume is a member of.
    #[serde(default)]
    pub set: Option<String>,
    /// This member's index in the set.
    #[serde(default)]
    pub member: Option<u32>,
    /// How many members the set has.
    #[serde(default)]
    pub members: Option<u32>,
    /// The stripe's chunk size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u64>,
    /// How the set is built ([`LAYOUT_LUKS_PER_MEMBER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// The volume's KMS-wrapped data key (`up --kms-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_key: Option<WrappedKey>,
    /// A rotation's next data key, until it becomes `data_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<Box<WrappedKey>>,
    /// A rotation's previous key slot, until it is destroyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_slot: Option<u32>,
    /// Made by `up --ephemeral`: no key slot, the key only in memory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ephemeral: bool,
    /// What the volume is for when it holds no filesystem (`swap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<Purpose>,
    /// Its index among the node's volumes of one disk each
    /// (`up --each-disk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u32>,
}

/// What a volume is for, when it is not a filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    /// Swap space made by `secretfs swap` (always ephemeral).
    Swap,
}

/// Where a volume sits in a striped set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// The set's id (shared by every member).
    pub set: String,
    /// This member's index, from 0.
    pub member: u32,
    pub members: u32,
    /// The stripe's chunk size in bytes.
    pub chunk: u64,
}

impl Token {
    /// A new volume's token, before its key slot exists.
    pub fn formatting(volume: &str) -> Token {
        Token {
            version: TOKEN_VERSION,
            volume: volume.to_string(),
            state: TokenState::Formatting,
            filesystem: None,
            set: None,
            member: None,
            members: None,
            chunk: None,
            layout: None,
            data_key: None,
            next_key: None,
            retire_slot: None,
            ephemeral: false,
            purpose: None,
            disk: None,
        }
    }

    /// The same token carrying the volume's wrapped data key.
    pub fn with_data_key(self, w: WrappedKey) -> Token {
        Token {
            version: match w.scope {
                Scope::Volume => TOKEN_VERSION_DATA_KEY,
                Scope::Set => TOKEN_VERSION_SET_KEY,
            },
            data_key: Some(w),
            ..self
        }
    }

    /// What the encryption context of `w`, a data key record of this
    /// token, names: the volume `uuid` (the header's own UUID, never the
    /// token's word for it), or for a set's key the set this token places
    /// the member in.
    /// A set's key in a token that names no set is a damaged header
    /// (exit 4: the key cannot be used).
    pub fn key_owner<'a>(&'a self, uuid: &'a str, w: &WrappedKey) -> Result<Owner<'a>, Failure> {
        match w.scope {
            Scope::Volume => Ok(Owner::Volume(uuid)),
            Scope::Set => self.set.as_deref().map(Owner::Set).ok_or_else(|| {
                Failure::KeyUnavailable(format!(
                    "the data key of volume {uuid} is a set's, but its token names no set: the \
                     header is damaged"
                ))
            }),
        }
    }

    /// Whether a data key record of the token is a set's.
    fn holds_a_set_key(&self) -> bool {
        let set = |w: Option<&WrappedKey>| w.is_some_and(|w| w.scope == Scope::Set);
        set(self.data_key.as_ref()) || set(self.next_key.as_deref())
    }

    /// The same token for an ephemeral volume (no key slot).
    pub fn ephemeral(self) -> Token {
        Token {
            version: TOKEN_VERSION_EPHEMERAL,
            ephemeral: true,
            ..self
        }
    }

    /// The same token for ephemeral swap space (`secretfs swap`).
    pub fn swap(self) -> Token {
        Token {
            purpose: Some(Purpose::Swap),
            ..self.ephemeral()
        }
    }

    /// A new member's token, before the set is complete.
    pub fn member(volume: &str, p: &Place) -> Token {
        Token {
            version: TOKEN_VERSION_SET,
            set: Some(p.set.clone()),
            member: Some(p.member),
            members: Some(p.members),
            chunk: Some(p.chunk),
            layout: Some(LAYOUT_LUKS_PER_MEMBER.into()),
            ..Token::formatting(volume)
        }
    }

    /// The place in a set, when this is a member (all fields present).
    pub fn place(&self) -> Option<Place> {
        Some(Place {
            set: self.set.clone()?,
            member: self.member?,
            members: self.members?,
            chunk: self.chunk?,
        })
    }

    /// Whether the token names a set (complete or not).
    pub fn in_set(&self) -> bool {
        self.set.is_some()
    }

    /// The JSON libcryptsetup stores.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a token serialises");
        if self.holds_a_set_key() {
            v["version"] = self.version.max(TOKEN_VERSION_SET_KEY).into();
        }
        v["type"] = names::TOKEN_TYPE.into();
        v["keyslots"] = serde_json::json!([]);
        v
    }

    /// Reads a token's JSON; the message says what is wrong with it.
    pub fn from_json(v: &serde_json::Value) -> Result<Token, String> {
        if v.get("type").and_then(|t| t.as_str()) != Some(names::TOKEN_TYPE) {
            return Err(format!("not a {} token", names::TOKEN_TYPE));
        }
        let version = v.get("version").and_then(|n| n.as_u64());
        match version {
            Some(n) if n > u64::from(TOKEN_VERSION_SET_KEY) => {
                return Err(format!(
                    "token version {n} is newer than this secretfs understands ({TOKEN_VERSION_SET_KEY}): upgrade secretfs"
                ))
            }
            None => return Err("token has no version".into()),
            _ => {}
        }
        serde_json::from_value(v.clone()).map_err(|e| format!("token does not parse: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_libcryptsetup_fields() {
        let mut t = Token::formatting("1234");
        let v = t.to_json();
        assert_eq!(v["type"], "secretfs");
        assert_eq!(v["keyslots"], serde_json::json!([]));
        assert_eq!(v["state"], "formatting");
        assert_eq!(Token::from_json(&v).unwrap(), t);
        t.state = TokenState::Ready;
        t.filesystem = Some("ext4".into());
        assert_eq!(Token::from_json(&t.to_json()).unwrap(), t);
        // A volume of one disk among a node's (`--each-disk`): its index,
        // the version unchanged (it is a single volume); none written when
        // there is none.
        assert!(t.to_json().get("disk").is_none());
        t.disk = Some(2);
        let v = t.to_json();
        assert_eq!(
            (v["disk"].as_u64(), v["version"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(Token::from_json(&v).unwrap(), t);
    }

    #[test]
    fn a_member_token_carries_its_place() {
        let p = Place {
            set: "s1".into(),
            member: 2,
            members: 4,
            chunk: 512 << 10,
        };
        let t = Token::member("u", &p);
        let v = t.to_json();
        assert_eq!(v["version"], 2);
        assert_eq!(v["layout"], LAYOUT_LUKS_PER_MEMBER);
        let back = Token::from_json(&v).unwrap();
        assert_eq!(back.place(), Some(p));
        assert!(back.in_set());
        assert_eq!(Token::formatting("u").place(), None);
        // A single volume's token has no set fields beyond the nulls v1 had.
        assert!(Token::formatting("u").to_json().get("chunk").is_none());
    }

    #[test]
    fn a_data_key_token_is_version_3_and_keeps_its_place() {
        let p = Place {
            set: "s1".into(),
            member: 1,
            members: 2,
            chunk: 512 << 10,
        };
        let w = WrappedKey {
            kms_key: "arn:k".into(),
            ciphertext: "AAEC".into(),
            instance: false,
            context_keys: None,
            scope: Scope::Volume,
        };
        let t = Token::member("u", &p).with_data_key(w.clone());
        let v = t.to_json();
        assert_eq!(v["version"], 3);
        assert_eq!(v["data_key"]["ciphertext"], "AAEC");
        let back = Token::from_json(&v).unwrap();
        assert_eq!(back.data_key, Some(w.clone()));
        assert_eq!(back.place(), Some(p.clone()));
        assert!(Token::formatting("u").to_json().get("data_key").is_none());
        assert_eq!(back.key_owner("hdr", &w).unwrap(), Owner::Volume("hdr"));

        // A set's one key: version 5, its context names the member's set.
        let set_key = WrappedKey {
            scope: Scope::Set,
            ..w.clone()
        };
        let t = Token::member("u", &p).with_data_key(set_key.clone());
        let v = t.to_json();
        assert_eq!(v["version"], 5);
        let back = Token::from_json(&v).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.key_owner("hdr", &set_key).unwrap(), Owner::Set("s1"));
        // A set's key in a token that names no set: damaged.
        let lone = Token::formatting("u").with_data_key(set_key.clone());
        let e = lone.key_owner("hdr", &set_key).unwrap_err();
        assert!(e.to_string().contains("names no set"), "{e}");
        assert_eq!(e.exit_code(), crate::error::EXIT_KEY_UNAVAILABLE);
        // A rotation moving a member to its set's key records it as the
        // next key: the token is version 5 from then on.
        let mut moving = Token::member("u", &p).with_data_key(w);
        moving.next_key = Some(Box::new(set_key));
        assert_eq!(moving.to_json()["version"], 5);
        // Newer than 5 is refused.
        let mut v6 = v.clone();
        v6["version"] = 6.into();
        assert!(Token::from_json(&v6)
            .unwrap_err()
            .contains("upgrade secretfs"));
    }

    #[test]
    fn an_ephemeral_token_is_version_4_and_keeps_its_place() {
        let p = Place {
            set: "s1".into(),
            member: 0,
            members: 2,
            chunk: 512 << 10,
        };
        let t = Token::member("u", &p).ephemeral();
        let v = t.to_json();
        assert_eq!(v["version"], 4);
        assert_eq!(v["ephemeral"], true);
        let back = Token::from_json(&v).unwrap();
        assert!(back.ephemeral);
        assert_eq!(back.place(), Some(p));
        let s = Token::formatting("u").swap().to_json();
        assert_eq!(
            (s["purpose"].as_str(), s["ephemeral"].as_bool()),
            (Some("swap"), Some(true))
        );
        assert_eq!(Token::from_json(&s).unwrap().purpose, Some(Purpose::Swap));
        // A purpose this build does not know is not read.
        let mut future = s.clone();
        future["purpose"] = "cache".into();
        assert!(Token::from_json(&future).is_err());
        // Tokens of kept keys say nothing of it.
        assert!(Token::formatting("u").to_json().get("ephemeral").is_none());
        assert!(
            !Token::from_json(&Token::formatting("u").to_json())
                .unwrap()
                .ephemeral
        );
    }

    #[test]
    fn foreign_and_future_tokens_are_not_read() {
        let mut v = Token::formatting("u").to_json();
        v["version"] = 9.into();
        assert!(Token::from_json(&v)
            .unwrap_err()
            .contains("upgrade secretfs"));
        v["type"] = "systemd-tpm2".into();
        assert!(Token::from_json(&v).unwrap_err().contains("not a secretfs"));
        let v = serde_json::json!({"type": "secretfs", "keyslots": []});
        assert!(Token::from_json(&v).unwrap_err().contains("no version"));
    }
}
