//! LUKS2 through libcryptsetup: format, open, close, and our token.
//!
//! libcryptsetup is not thread-safe: libcryptsetup-rs's `mutex` feature
//! serialises every call (as stratisd does), so observation and the unit
//! tests may call it from any thread. A set's members are formatted in
//! processes of their own ([`crate::member`]), so that their
//! libcryptsetup calls do not take turns; an ephemeral set's members keep
//! a thread each, which do. Each
//! operation acquires a fresh `CryptDevice` context and lets it go.
//! Nothing here talks to KMS: a data key is made or decrypted by the
//! caller ([`crate::exec`]) before any disk work and handed in as a
//! passphrase ([`SlotKey::NewDataKey`], [`SlotKey::HeaderDataKey`]).
//! [`header`] only reads; everything that writes a header is here and in
//! [`slots`] (adding and destroying the key slots of a volume).

pub mod header;
pub mod slots;
pub mod token;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

use anyhow::{Context, Result};
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{
    CryptKdf, CryptLogLevel, EncryptionFormat, KeyslotsSize, MetadataSize,
};
use libcryptsetup_rs::{
    CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, Either, TokenInput,
};
use tracing::{debug, info, trace, warn};

use self::header::{errno, TokenFound};
use self::token::{Place, Token, TokenState};
use crate::error::{refused, Failure};
use crate::fault;
use crate::keys::data_key::WrappedKey;
use crate::keys::ephemeral::EphemeralKeys;
use crate::keys::Passphrase;
use crate::names;

/// Cipher and mode of new volumes.
pub const CIPHER: (&str, &str) = ("aes", "xts-plain64");
/// Volume key size in bytes (512 bits: AES-256 in XTS mode).
pub const VOLUME_KEY_BYTES: usize = 64;
/// PBKDF2 iterations for high-entropy keys (libcryptsetup's minimum).
pub const PBKDF2_ITERATIONS: u32 = 1000;
/// Size of the LUKS2 key-slot area of new volumes: room for four key
/// slots of a 512-bit key (252 KiB each with libcryptsetup's 4000 AF
/// stripes), so a rotation can add a slot before it removes one.
/// libcryptsetup's default is 16 MiB - 32 KiB, which it fills with random
/// bytes at format after zeroing the whole 16 MiB header area: 32 MiB of
/// writes and 16 MiB of /dev/urandom per disk. With 1 MiB the data starts
/// at 2 MiB and a format writes 3 MiB (bench/RESULTS.md, "time to mounted").
pub const KEYSLOTS_AREA_BYTES: u64 = 1 << 20;

/// The key-slot PBKDF to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kdf {
    /// PBKDF2-SHA256, fixed iterations, no benchmark.
    Pbkdf2,
    /// argon2id with libcryptsetup's benchmarked defaults.
    Argon2id,
}

/// Parameters of a new volume.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FormatOptions {
    /// LUKS2 label (the volume name).
    pub label: String,
    /// Encryption sector size: 4096, or 512 when the device needs it.
    pub sector_size: u32,
    pub kdf: Kdf,
    /// Store `no_read_workqueue`/`no_write_workqueue` in the header.
    pub no_workqueues: bool,
    /// Store `allow_discards` in the header.
    pub discard: bool,
    /// Swap space: the token says so (ephemeral keys only).
    pub swap: bool,
    /// The volume's index among a node's volumes of one disk each
    /// (`up --each-disk`), for its token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_index: Option<u32>,
}

/// PBKDF2-SHA256 with [`PBKDF2_ITERATIONS`] and no benchmark: the key
/// slot PBKDF for keys of high entropy.
fn pbkdf2() -> CryptPbkdfType {
    CryptPbkdfType {
        type_: CryptKdf::Pbkdf2,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: PBKDF2_ITERATIONS,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: CryptPbkdf::NO_BENCHMARK,
    }
}

/// Routes libcryptsetup's log messages into `tracing`.
pub fn set_up_logging() {
    unsafe extern "C" fn cb(level: c_int, msg: *const c_char, _usr: *mut c_void) {
        if msg.is_null() {
            return;
        }
        // SAFETY: libcryptsetup passes a NUL-terminated string valid for
        // the duration of the call.
        let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        let text = text.trim_end();
        // A small key-slot area is our choice (KEYSLOTS_AREA_BYTES), not
        // news for the operator.
        if text.starts_with("WARNING: keyslots area (") {
            debug!(target: "libcryptsetup", "{text}");
            return;
        }
        match CryptLogLevel::try_from(level) {
            Ok(CryptLogLevel::Error) => warn!(target: "libcryptsetup", "{text}"),
            Ok(CryptLogLevel::Normal) => info!(target: "libcryptsetup", "{text}"),
            Ok(CryptLogLevel::Verbose) => debug!(target: "libcryptsetup", "{text}"),
            _ => trace!(target: "libcryptsetup", "{text}"),
        }
    }
    libcryptsetup_rs::set_log_callback::<()>(Some(cb), None);
}

/// The passphrase of a key slot to add or to open with.
#[derive(Clone, Copy)]
pub enum SlotKey<'a> {
    /// One passphrase for every volume (`from` names it in messages).
    Given { pass: &'a Passphrase, from: &'a str },
    /// A data key the caller just made (format only): its passphrase
    /// opens the key slot, its record goes into the token.
    NewDataKey {
        pass: &'a Passphrase,
        record: &'a WrappedKey,
    },
    /// The data key the header's token records, decrypted by the caller
    /// (open only); `None` when the header records none.
    HeaderDataKey(Option<&'a Passphrase>),
    /// No key slot: each volume's random volume key, only in memory
    /// (`up --ephemeral`).
    Ephemeral(&'a EphemeralKeys),
}

/// Writes a new LUKS2 header with our token and one key slot for `key`
/// (a new data key's record goes into the token; an ephemeral volume gets
/// a random volume key and no key slot at all), with the LUKS UUID `uuid`
/// when the caller chose it (a volume's data key names it in its context);
/// returns the volume's UUID. The token says `formatting` until the key
/// slot exists, so a crash in between leaves a header that `up` knows to
/// format again. A member of a set (`place`) stays `formatting` until
/// every member has its key slot ([`mark_ready`]).
pub fn format(
    dev: &Path,
    key: SlotKey<'_>,
    o: &FormatOptions,
    place: Option<&Place>,
    uuid: Option<uuid::Uuid>,
) -> Result<String> {
    let what = || format!("formatting LUKS2 on {}", dev.display());
    if matches!(key, SlotKey::HeaderDataKey(_)) {
        anyhow::bail!(
            "{}: a header's data key is for opening, not formatting",
            what()
        );
    }
    let mut cd = CryptInit::init(dev).with_context(what)?;
    cd.settings_handle()
        .set_metadata_size(
            MetadataSize::Kb16,
            KeyslotsSize::try_from(KEYSLOTS_AREA_BYTES).with_context(what)?,
        )
        .with_context(what)?;
    let pbkdf = match o.kdf {
        Kdf::Pbkdf2 => Some(pbkdf2()),
        Kdf::Argon2id => None,
    };
    if let Some(p) = &pbkdf {
        cd.settings_handle().set_pbkdf_type(p).with_context(what)?;
    }
    let params = CryptParamsLuks2 {
        pbkdf,
        integrity: None,
        integrity_params: None,
        data_alignment: 0,
        data_device: None,
        sector_size: o.sector_size,
        label: Some(o.label.clone()),
        subsystem: Some(names::LUKS_SUBSYSTEM.to_string()),
    };
    let mut params_ref: CryptParamsLuks2Ref<'_> = (&params).try_into().with_context(what)?;
    let volume_key = match key {
        SlotKey::Ephemeral(keys) => Some(keys.make()?),
        _ => None,
    };
    cd.context_handle()
        .format(
            EncryptionFormat::Luks2,
            CIPHER,
            uuid,
            match &volume_key {
                Some(k) => Either::Left(k.expose()),
                None => Either::Right(VOLUME_KEY_BYTES),
            },
            Some(&mut params_ref),
        )
        .with_context(what)?;
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map(|u| u.to_string())
        .with_context(what)?;
    let mut token = match place {
        Some(p) => Token::member(&uuid, p),
        None => Token {
            disk: o.disk_index,
            ..Token::formatting(&uuid)
        },
    };
    let pass = match key {
        SlotKey::Given { pass, .. } => Some(pass),
        SlotKey::NewDataKey { pass, record } => {
            token = token.with_data_key(record.clone());
            Some(pass)
        }
        SlotKey::HeaderDataKey(_) => unreachable!("refused above"),
        SlotKey::Ephemeral(_) => {
            token = if o.swap {
                token.swap()
            } else {
                token.ephemeral()
            };
            None
        }
    };
    let id = cd
        .token_handle()
        .json_set(TokenInput::AddToken(&token.to_json()))
        .with_context(|| format!("writing the secretfs token on {}", dev.display()))?;
    fault::point("format_header");
    if let Some(pass) = pass {
        cd.keyslot_handle()
            .add_by_key(None, None, pass.expose(), CryptVolumeKey::empty())
            .with_context(|| format!("adding a key slot on {}", dev.display()))?;
    }
    let mut flags = CryptActivate::empty();
    if o.no_workqueues {
        flags |= CryptActivate::NO_READ_WORKQUEUE | CryptActivate::NO_WRITE_WORKQUEUE;
    }
    if o.discard {
        flags |= CryptActivate::ALLOW_DISCARDS;
    }
    if !flags.is_empty() {
        cd.luks2_flag_handle::<CryptActivate>()
            .persistent_flags_set(flags)
            .with_context(|| {
                format!(
                    "storing activation flags in the header of {}",
                    dev.display()
                )
            })?;
    }
    if place.is_none() {
        token.state = TokenState::Ready;
        cd.token_handle()
            .json_set(TokenInput::ReplaceToken(id, &token.to_json()))
            .with_context(|| format!("marking the volume on {} ready", dev.display()))?;
    }
    if let (SlotKey::Ephemeral(keys), Some(k)) = (key, volume_key) {
        keys.keep(&uuid, k);
    }
    Ok(uuid)
}

/// Marks a member of a new set `ready` (once every member has its key
/// slot).
pub fn mark_ready(dev: &Path) -> Result<()> {
    update_token(dev, |t| t.state = TokenState::Ready)
        .with_context(|| format!("marking the member on {} ready", dev.display()))
        .map(|_| ())
}

/// Rewrites our token on `dev` with `change` applied; a volume made before
/// tokens (no token yet) gets one, in state `ready`.
pub fn update_token(dev: &Path, change: impl FnOnce(&mut Token)) -> Result<Token> {
    let what = || format!("updating the secretfs token on {}", dev.display());
    let mut cd = header::load(dev)
        .with_context(what)?
        .with_context(|| format!("{} has no LUKS2 header", dev.display()))?;
    let (input_id, mut token) = match header::find_token(&mut cd) {
        TokenFound::Present { id, token } => (Some(id), *token),
        TokenFound::Absent => {
            let uuid = cd
                .status_handle()
                .get_uuid()
                .map(|u| u.to_string())
                .with_context(what)?;
            let mut t = Token::formatting(&uuid);
            t.state = TokenState::Ready;
            (None, t)
        }
        TokenFound::Unreadable { reason } => anyhow::bail!("{}: {reason}", what()),
    };
    change(&mut token);
    let json = token.to_json();
    let input = match input_id {
        Some(id) => TokenInput::ReplaceToken(id, &json),
        None => TokenInput::AddToken(&json),
    };
    cd.token_handle().json_set(input).with_context(what)?;
    Ok(token)
}

/// Opens the LUKS2 volume on `dev` as /dev/mapper/`name`.
///
/// A passphrase that opens no key slot is [`Failure::KeyUnavailable`]
/// (exit 4); the header is not written to.
pub fn open(dev: &Path, name: &str, key: SlotKey<'_>, discard: bool) -> Result<()> {
    let mut cd = header::load(dev)?
        .with_context(|| format!("{} has no LUKS2 header to open", dev.display()))?;
    let (data_key, ephemeral) = match header::find_token(&mut cd) {
        TokenFound::Present { token, .. } => (token.data_key, token.ephemeral),
        _ => (None, false),
    };
    let flags = if discard {
        CryptActivate::ALLOW_DISCARDS
    } else {
        CryptActivate::empty()
    };
    match (key, ephemeral) {
        (SlotKey::Ephemeral(keys), true) => return open_ephemeral(&mut cd, dev, name, keys, flags),
        (SlotKey::Ephemeral(_), false) => {
            return Err(Failure::KeyUnavailable(format!(
            "the volume on {} has a kept key, not an ephemeral one: --ephemeral does not open it; \
                 the header was not changed",
            dev.display()
        ))
            .into())
        }
        (_, true) => {
            return Err(Failure::KeyUnavailable(format!(
            "the volume on {} is ephemeral (made with --ephemeral): no key opens it once closed; \
                 the header was not changed",
            dev.display()
        ))
            .into())
        }
        _ => {}
    }
    let (pass, key_from) = match (key, data_key) {
        (SlotKey::Given { pass, from }, None) => (pass, from.to_string()),
        (SlotKey::Given { from, .. }, Some(_)) => {
            return Err(Failure::KeyUnavailable(format!(
                "the volume on {} keeps its own data key in its header (it was made with --kms-key): \
                 run up with --kms-key, not the {from}; the header was not changed",
                dev.display()
            ))
            .into())
        }
        (SlotKey::HeaderDataKey(Some(pass)), Some(_)) => (pass, "data key in its header".to_string()),
        (SlotKey::HeaderDataKey(None), Some(_)) | (SlotKey::NewDataKey { .. }, _) => {
            anyhow::bail!(
                "opening {}: no decrypted data key was handed in for its header",
                dev.display()
            )
        }
        (SlotKey::HeaderDataKey(_), None) => {
            return Err(Failure::KeyUnavailable(format!(
                "the volume on {} has no data key in its header: it opens with the passphrase it was \
                 made with (--wrapped-key or --passphrase-file), not --kms-key; the header was not changed",
                dev.display()
            ))
            .into())
        }
        (SlotKey::Ephemeral(_), _) => unreachable!("ephemeral keys are handled above"),
    };
    let mapper = names::mapper_path(name);
    fault::point("unlock");
    match cd.activate_handle().activate_by_passphrase(Some(name), None, pass.expose(), flags) {
        Ok(slot) => {
            debug!("key slot {slot} opened");
            Ok(())
        }
        Err(e) if errno(&e) == Some(libc::EPERM) => Err(Failure::KeyUnavailable(format!(
            "the {key_from} does not open the LUKS2 volume on {} (no key slot matches); the header was not changed",
            dev.display()
        ))
        .into()),
        Err(e) if errno(&e) == Some(libc::ENOMEM) => Err(anyhow::Error::new(e).context(format!(
            "opening {}: not enough memory for the key slot's PBKDF (argon2id on a small machine?)",
            dev.display()
        ))),
        Err(e) if errno(&e) == Some(libc::EEXIST) => Err(Failure::Refused(format!(
            "{} appeared while secretfs was opening {}",
            mapper.display(),
            dev.display()
        ))
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("activating {} as {}", dev.display(), mapper.display()))),
    }
}

/// Opens an ephemeral volume formatted in this run with the volume key
/// made for it (which is then dropped, zeroed).
fn open_ephemeral(
    cd: &mut libcryptsetup_rs::CryptDevice,
    dev: &Path,
    name: &str,
    keys: &EphemeralKeys,
    flags: CryptActivate,
) -> Result<()> {
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map(|u| u.to_string())
        .with_context(|| format!("reading the UUID of {}", dev.display()))?;
    let Some(key) = keys.take(&uuid) else {
        return Err(Failure::KeyUnavailable(format!(
            "the ephemeral volume on {} was made by an earlier run, and its key died with that run's \
             mapping: no key opens it; the header was not changed",
            dev.display()
        ))
        .into());
    };
    cd.activate_handle()
        .activate_by_volume_key(Some(name), Some(key.expose()), flags)
        .map_err(|e| {
            let mapper = names::mapper_path(name);
            if errno(&e) == Some(libc::EEXIST) {
                return Failure::Refused(format!(
                    "{} appeared while secretfs was opening {}",
                    mapper.display(),
                    dev.display()
                ))
                .into();
            }
            anyhow::Error::new(e).context(format!(
                "activating {} as {}",
                dev.display(),
                mapper.display()
            ))
        })
}

/// Closes /dev/mapper/`name` (and drops its key from the kernel keyring).
pub fn close(name: &str) -> Result<()> {
    let mapper = names::mapper_path(name);
    let mut cd = CryptInit::init_by_name_and_header(name, None)
        .with_context(|| format!("looking up {}", mapper.display()))?;
    cd.activate_handle()
        .deactivate(name, CryptDeactivate::empty())
        .map_err(|e| {
            let busy = errno(&e) == Some(libc::EBUSY);
            anyhow::Error::new(e).context(if busy {
                format!(
                    "closing {}: it is busy (still mounted or open)",
                    mapper.display()
                )
            } else {
                format!("closing {}", mapper.display())
            })
        })
}

/// What [`erase`] destroyed on one device.
#[derive(Debug)]
pub struct Erased {
    /// Key slots destroyed by libcryptsetup.
    pub key_slots: u32,
    /// Bytes zeroed from offset 0: both LUKS2 header copies and the key
    /// slot area (everything before the data).
    pub header_bytes: u64,
}

/// Crypto-shred: destroys every key slot of the LUKS2 header on `dev`
/// (libcryptsetup), then zeroes everything before the data offset (both
/// header copies and the key slot area). Without a key slot the volume
/// key is gone, and with it the data. Irreversible.
pub fn erase(dev: &Path) -> Result<Erased> {
    let what = || format!("erasing the LUKS2 header of {}", dev.display());
    let Some(mut cd) = header::load(dev)? else {
        return refused(format!("{} holds no LUKS2 header", dev.display()));
    };
    let max = libcryptsetup_rs::CryptKeyslotHandle::max_keyslots(EncryptionFormat::Luks2)
        .map_err(anyhow::Error::new)
        .with_context(what)?;
    let mut key_slots = 0;
    for slot in 0..max {
        let used = cd
            .keyslot_handle()
            .status(slot)
            .is_ok_and(slots::holds_a_key);
        if used {
            cd.keyslot_handle()
                .destroy(slot)
                .map_err(anyhow::Error::new)
                .with_context(|| format!("destroying key slot {slot} of {}", dev.display()))?;
            key_slots += 1;
        }
    }
    let header_bytes = cd.status_handle().get_data_offset() * 512;
    drop(cd);
    if header_bytes < 2 * 16384 {
        return Err(anyhow::anyhow!(
            "the data offset is {header_bytes} bytes, too small for two LUKS2 headers"
        ))
        .with_context(what);
    }
    crate::device::zero(dev, &[(0, header_bytes)]).with_context(what)?;
    Ok(Erased {
        key_slots,
        header_bytes,
    })
}

/// Whether the running kernel is at least 5.9 (dm-crypt workqueue flags).
pub fn kernel_has_workqueue_flags() -> bool {
    let Ok(u) = nix::sys::utsname::uname() else {
        return false;
    };
    kernel_at_least(&u.release().to_string_lossy(), 5, 9)
}

/// Parses a kernel release (`6.1.0-56-amd64`) and compares it.
pub fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn given(pass: &Passphrase) -> SlotKey<'_> {
        SlotKey::Given {
            pass,
            from: "test passphrase",
        }
    }

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.1.0-56-amd64", 5, 9));
        assert!(kernel_at_least("5.9.0", 5, 9));
        assert!(!kernel_at_least("5.4.0-1103-aws", 5, 9));
        assert!(!kernel_at_least("4.14.355-275.582.amzn2.x86_64", 5, 9));
        assert!(!kernel_at_least("garbage", 5, 9));
    }

    pub(super) fn options() -> FormatOptions {
        FormatOptions {
            label: "unit".into(),
            sector_size: 4096,
            kdf: Kdf::Pbkdf2,
            no_workqueues: true,
            discard: false,
            swap: false,
            disk_index: None,
        }
    }

    /// A 32 MiB image file in a fresh directory and a random passphrase.
    pub(super) fn image_and_pass() -> (tempfile::TempDir, std::path::PathBuf, Passphrase) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let pass = Passphrase::generate(64).unwrap();
        (dir, img, pass)
    }

    #[test]
    fn the_key_slot_area_holds_four_slots_and_data_starts_at_2_mib() {
        let (_dir, img, pass) = image_and_pass();
        format(&img, given(&pass), &options(), None, None).unwrap();
        let info = header::inspect(&img).unwrap().expect("a LUKS header");
        assert_eq!(info.data_offset_bytes, 2 << 20);
        // Three more slots fit beside the first (a rotation needs one).
        let mut cd = header::load(&img).unwrap().expect("a header");
        for _ in 0..3 {
            cd.keyslot_handle()
                .add_by_passphrase(None, pass.expose(), pass.expose())
                .unwrap();
        }
        let full = cd
            .keyslot_handle()
            .add_by_passphrase(None, pass.expose(), pass.expose());
        assert!(full.is_err(), "a fifth key slot fitted in the area");
    }

    #[test]
    fn format_writes_a_ready_token_and_inspect_reads_it() {
        // LUKS2 formatting needs no device-mapper: it runs on any machine.
        let (dir, img, pass) = image_and_pass();
        // A volume of one disk among a node's: its index in the token.
        let opts = FormatOptions {
            disk_index: Some(2),
            ..options()
        };
        let uuid = format(&img, given(&pass), &opts, None, None).unwrap();
        let h = header::read(&img).unwrap().expect("a LUKS2 header");
        assert_eq!(h.uuid, uuid);
        assert_eq!(h.active_keyslots, 1);
        let TokenFound::Present { token, .. } = &h.token else {
            panic!("no token: {h:?}")
        };
        assert_eq!(token.state, TokenState::Ready);
        assert_eq!(token.volume, uuid);
        assert_eq!(token.filesystem, None);
        assert_eq!(token.disk, Some(2));
        let t = update_token(&img, |t| t.filesystem = Some("ext4".into())).unwrap();
        assert_eq!(t.filesystem.as_deref(), Some("ext4"));
        let info = header::inspect(&img).unwrap().expect("a LUKS header");
        assert_eq!(
            (
                info.version,
                info.cipher.as_str(),
                info.cipher_mode.as_str()
            ),
            (2, "aes", "xts-plain64")
        );
        assert_eq!(info.key_bits, 512);
        assert_eq!(info.sector_size, 4096);
        assert_eq!(info.pbkdf.as_deref(), Some("pbkdf2"));
        assert_eq!(info.pbkdf_iterations, Some(PBKDF2_ITERATIONS));
        let cost = header::slot_cost(&img).unwrap().expect("a key slot");
        assert_eq!(cost.kdf, Kdf::Pbkdf2);
        assert_eq!(
            info.persistent_flags,
            vec!["no_read_workqueue", "no_write_workqueue"]
        );
        assert_eq!(info.token.unwrap().filesystem.as_deref(), Some("ext4"));
        // A file that is not LUKS.
        let plain = dir.path().join("p.img");
        std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
        assert!(header::read(&plain).unwrap().is_none());
        assert!(header::inspect(&plain).unwrap().is_none());
        // A path that cannot be read is an error, never "no header".
        assert!(header::read(&dir.path().join("absent.img")).is_err());
    }

    /// A data key is made before the header (its context names the UUID
    /// the caller chose): the header takes that UUID, the token the
    /// record, and the key slot the passphrase. The same passphrase and
    /// record make every member of a set.
    #[test]
    fn a_new_data_key_formats_with_the_chosen_uuid_and_its_record() {
        let (dir, img, pass) = image_and_pass();
        let chosen = uuid::Uuid::from_u128(0x1234_5678_9abc_4def_8123_4567_89ab_cdef);
        let record = WrappedKey {
            kms_key: "arn:aws:kms:eu-west-1:111122223333:key/k".into(),
            ciphertext: "AAEC".into(),
            instance: false,
            context_keys: Some(vec![]),
            scope: crate::keys::data_key::Scope::Set,
        };
        let key = SlotKey::NewDataKey {
            pass: &pass,
            record: &record,
        };
        let place = |member| Place {
            set: "s1".into(),
            member,
            members: 2,
            chunk: 512 << 10,
        };
        let uuid = format(&img, key, &options(), Some(&place(0)), Some(chosen)).unwrap();
        assert_eq!(uuid, chosen.to_string());
        let other = dir.path().join("w.img");
        std::fs::File::create(&other)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        format(&other, key, &options(), Some(&place(1)), None).unwrap();
        for img in [&img, &other] {
            let h = header::read(img).unwrap().expect("a LUKS2 header");
            let TokenFound::Present { token, .. } = &h.token else {
                panic!("no token: {h:?}")
            };
            assert_eq!(token.data_key.as_ref(), Some(&record));
            assert_eq!(token.version, token::TOKEN_VERSION_SET_KEY);
            assert!(slots::opened_by(img, &pass).unwrap().is_some());
        }
        // A header's data key is never a format's key.
        let e = format(
            &img,
            SlotKey::HeaderDataKey(Some(&pass)),
            &options(),
            None,
            None,
        );
        assert!(e.is_err());
    }

    #[test]
    fn an_ephemeral_format_writes_no_key_slot_and_keeps_the_key_in_memory() {
        let (_dir, img, _) = image_and_pass();
        let keys = EphemeralKeys::new();
        let uuid = format(&img, SlotKey::Ephemeral(&keys), &options(), None, None).unwrap();
        let h = header::read(&img).unwrap().expect("a LUKS2 header");
        assert_eq!(h.active_keyslots, 0);
        let TokenFound::Present { token, .. } = &h.token else {
            panic!("no token: {h:?}")
        };
        assert!(token.ephemeral);
        assert_eq!(token.version, token::TOKEN_VERSION_EPHEMERAL);
        assert_eq!(token.state, TokenState::Ready);
        // The key is the header's volume key, and nothing else holds it.
        let key = keys.take(&uuid).expect("the volume key of this run");
        let mut cd = header::load(&img).unwrap().unwrap();
        cd.volume_key_handle()
            .verify(key.expose())
            .expect("the kept key is the volume key");
        assert!(keys.take(&uuid).is_none());
    }

    #[test]
    fn a_header_from_before_tokens_gets_one() {
        // What secretfs made before tokens: our subsystem, a key slot, no
        // token. update_token adds a ready one.
        let (_dir, img, pass) = image_and_pass();
        format(&img, given(&pass), &options(), None, None).unwrap();
        let mut cd = header::load(&img).unwrap().unwrap();
        let TokenFound::Present { id, .. } = header::find_token(&mut cd) else {
            panic!("no token")
        };
        cd.token_handle()
            .json_set(TokenInput::RemoveToken(id))
            .unwrap();
        drop(cd);
        assert_eq!(
            header::read(&img).unwrap().unwrap().token,
            TokenFound::Absent
        );
        let t = update_token(&img, |t| t.filesystem = Some("ext4".into())).unwrap();
        assert_eq!(t.state, TokenState::Ready);
        let h = header::read(&img).unwrap().unwrap();
        assert!(matches!(h.token, TokenFound::Present { ref token, .. } if **token == t));
    }
}
