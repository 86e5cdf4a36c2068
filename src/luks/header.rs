//! Reading LUKS2 headers, never writing them: whether a header is there,
//! our token in it, its key slots, and the facts `status` shows.

use std::path::Path;

use anyhow::{Context, Result};
use libcryptsetup_rs::consts::flags::CryptActivate;
use libcryptsetup_rs::consts::vals::{CryptKdf, EncryptionFormat, KeyslotInfo};
use libcryptsetup_rs::{CryptDevice, CryptInit, CryptTokenInfo, LibcryptErr};

use super::token::Token;
use crate::names;

/// LUKS2 has at most this many key slots and tokens.
pub const MAX_SLOTS: u32 = 32;

/// Our token as found in a header.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenFound {
    /// No token of ours: a volume made before tokens, or not ours.
    Absent,
    /// Our token, in slot `id`.
    Present { id: u32, token: Box<Token> },
    /// A token of our type that this build cannot read (the reason).
    Unreadable { reason: String },
}

/// A LUKS2 header libcryptsetup loaded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    pub uuid: String,
    pub token: TokenFound,
    /// Key slots that can open the volume.
    pub active_keyslots: u32,
}

pub(super) fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

/// Loads the LUKS2 header of `path`: `Ok(None)` when there is none (or
/// libcryptsetup does not take it for LUKS2), an error when the device
/// cannot be read: a read error is never "no header".
pub fn load(path: &Path) -> Result<Option<CryptDevice>> {
    let mut cd = CryptInit::init(path).with_context(|| format!("opening {}", path.display()))?;
    match cd
        .context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
    {
        Ok(()) => Ok(Some(cd)),
        Err(e) if matches!(errno(&e), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("reading the LUKS2 header of {}", path.display())),
    }
}

/// Finds our token in a loaded header.
pub fn find_token(cd: &mut CryptDevice) -> TokenFound {
    for id in 0..MAX_SLOTS {
        let ty = match cd.token_handle().status(id) {
            Ok(CryptTokenInfo::External(t) | CryptTokenInfo::ExternalUnknown(t)) => t,
            _ => continue,
        };
        if ty != names::TOKEN_TYPE {
            continue;
        }
        return match cd.token_handle().json_get(id) {
            Ok(v) => match Token::from_json(&v) {
                Ok(token) => TokenFound::Present {
                    id,
                    token: Box::new(token),
                },
                Err(reason) => TokenFound::Unreadable { reason },
            },
            Err(e) => TokenFound::Unreadable {
                reason: format!("reading token {id}: {e}"),
            },
        };
    }
    TokenFound::Absent
}

/// Reads the header of `path`, if it has one.
pub fn read(path: &Path) -> Result<Option<Header>> {
    let Some(mut cd) = load(path)? else {
        return Ok(None);
    };
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map(|u| u.to_string())
        .unwrap_or_default();
    let token = find_token(&mut cd);
    let active_keyslots = (0..MAX_SLOTS)
        .filter(|s| {
            matches!(
                cd.keyslot_handle().status(*s),
                Ok(KeyslotInfo::Active | KeyslotInfo::ActiveLast)
            )
        })
        .count() as u32;
    Ok(Some(Header {
        uuid,
        token,
        active_keyslots,
    }))
}

/// Facts about a LUKS header, for `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LuksInfo {
    pub version: u32,
    pub uuid: String,
    pub cipher: String,
    pub cipher_mode: String,
    pub key_bits: u32,
    pub sector_size: u32,
    pub data_offset_bytes: u64,
    /// PBKDF of the first active key slot.
    pub pbkdf: Option<String>,
    pub pbkdf_iterations: Option<u32>,
    /// Its memory cost in KiB (argon2; 0 for PBKDF2).
    pub pbkdf_memory_kib: Option<u32>,
    /// Activation flags stored in the header.
    pub persistent_flags: Vec<String>,
    /// Our token, if the header has one.
    pub token: Option<Token>,
}

/// Reads the LUKS header of `dev` for `status`; `Ok(None)` if it is not LUKS.
pub fn inspect(dev: &Path) -> Result<Option<LuksInfo>> {
    let mut cd = CryptInit::init(dev).with_context(|| format!("opening {}", dev.display()))?;
    let version = if cd
        .context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .is_ok()
    {
        2
    } else if cd
        .context_handle()
        .load::<()>(Some(EncryptionFormat::Luks1), None)
        .is_ok()
    {
        1
    } else {
        return Ok(None);
    };
    let mut st = cd.status_handle();
    let cipher = st.get_cipher().unwrap_or_default();
    let cipher_mode = st.get_cipher_mode().unwrap_or_default();
    let uuid = st.get_uuid().map(|u| u.to_string()).unwrap_or_default();
    let key_bits = (st.get_volume_key_size().max(0) as u32) * 8;
    let data_offset_bytes = st.get_data_offset() * 512;
    let sector_size = libcryptsetup_rs::get_sector_size(Some(&mut cd)).max(0) as u32;
    let (mut pbkdf, mut pbkdf_iterations, mut pbkdf_memory_kib) = (None, None, None);
    if let Some(p) = first_slot_pbkdf(&mut cd) {
        pbkdf = Some(
            match p.type_ {
                CryptKdf::Pbkdf2 => "pbkdf2",
                CryptKdf::Argon2I => "argon2i",
                CryptKdf::Argon2Id => "argon2id",
            }
            .to_string(),
        );
        pbkdf_iterations = Some(p.iterations);
        pbkdf_memory_kib = Some(p.max_memory_kb);
    }
    let (persistent_flags, token) = if version == 2 {
        let flags = cd
            .luks2_flag_handle::<CryptActivate>()
            .persistent_flags_get()
            .map(|f| {
                let mut v = Vec::new();
                if f.contains(CryptActivate::NO_READ_WORKQUEUE) {
                    v.push("no_read_workqueue".to_string());
                }
                if f.contains(CryptActivate::NO_WRITE_WORKQUEUE) {
                    v.push("no_write_workqueue".to_string());
                }
                if f.contains(CryptActivate::ALLOW_DISCARDS) {
                    v.push("allow_discards".to_string());
                }
                v
            })
            .unwrap_or_default();
        let token = match find_token(&mut cd) {
            TokenFound::Present { token, .. } => Some(*token),
            _ => None,
        };
        (flags, token)
    } else {
        (Vec::new(), None)
    };
    Ok(Some(LuksInfo {
        version,
        uuid,
        cipher,
        cipher_mode,
        key_bits,
        sector_size,
        data_offset_bytes,
        pbkdf,
        pbkdf_iterations,
        pbkdf_memory_kib,
        persistent_flags,
        token,
    }))
}

/// The PBKDF of the first active key slot.
fn first_slot_pbkdf(cd: &mut CryptDevice) -> Option<libcryptsetup_rs::CryptPbkdfType> {
    (0..MAX_SLOTS).find_map(|slot| cd.keyslot_handle().get_pbkdf(slot).ok())
}

/// What unlocking a key slot of a header costs: its KDF and, for argon2,
/// the memory it takes (KiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCost {
    pub kdf: super::Kdf,
    pub memory_kib: u32,
}

/// The cost of unlocking the first active key slot on `dev`; `Ok(None)`
/// when it has no LUKS2 header or no key slot (ephemeral).
pub fn slot_cost(dev: &Path) -> Result<Option<SlotCost>> {
    let Some(mut cd) = load(dev)? else {
        return Ok(None);
    };
    Ok(first_slot_pbkdf(&mut cd).map(|p| SlotCost {
        kdf: match p.type_ {
            CryptKdf::Pbkdf2 => super::Kdf::Pbkdf2,
            // Both argon2 variants are memory-hard.
            CryptKdf::Argon2I | CryptKdf::Argon2Id => super::Kdf::Argon2id,
        },
        memory_kib: p.max_memory_kb,
    }))
}
