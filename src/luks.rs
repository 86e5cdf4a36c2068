//! LUKS2 through libcryptsetup: format, open, close, inspect.
//!
//! libcryptsetup is not thread-safe, and libcryptsetup-rs (without its
//! `mutex` feature) panics if called from a second thread, so every call
//! here happens on the main thread, after the key was fetched. Each
//! operation acquires a fresh `CryptDevice` context and lets it go.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

use anyhow::{Context, Result};
use libcryptsetup_rs::consts::flags::{CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey};
use libcryptsetup_rs::consts::vals::{CryptKdf, CryptLogLevel, EncryptionFormat};
use libcryptsetup_rs::{
    CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, Either, LibcryptErr,
};
use tracing::{debug, info, trace, warn};

use crate::error::Failure;
use crate::keys::Passphrase;
use crate::names;

/// Cipher and mode of new volumes.
pub const CIPHER: (&str, &str) = ("aes", "xts-plain64");
/// Volume key size in bytes (512 bits: AES-256 in XTS mode).
pub const VOLUME_KEY_BYTES: usize = 64;
/// PBKDF2 iterations for high-entropy keys (libcryptsetup's minimum).
pub const PBKDF2_ITERATIONS: u32 = 1000;

/// The key-slot PBKDF to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kdf {
    /// PBKDF2-SHA256, fixed iterations, no benchmark.
    Pbkdf2,
    /// argon2id with libcryptsetup's benchmarked defaults.
    Argon2id,
}

/// Parameters of a new volume.
#[derive(Clone, Debug)]
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
        match CryptLogLevel::try_from(level) {
            Ok(CryptLogLevel::Error) => warn!(target: "libcryptsetup", "{text}"),
            Ok(CryptLogLevel::Normal) => info!(target: "libcryptsetup", "{text}"),
            Ok(CryptLogLevel::Verbose) => debug!(target: "libcryptsetup", "{text}"),
            _ => trace!(target: "libcryptsetup", "{text}"),
        }
    }
    libcryptsetup_rs::set_log_callback::<()>(Some(cb), None);
}

fn errno(e: &LibcryptErr) -> Option<i32> {
    match e {
        LibcryptErr::IOError(io) => io.raw_os_error(),
        _ => None,
    }
}

/// Whether libcryptsetup can load a LUKS2 header from `path`.
pub fn loads_as_luks2(path: &Path) -> bool {
    CryptInit::init(path)
        .and_then(|mut d| {
            d.context_handle()
                .load::<()>(Some(EncryptionFormat::Luks2), None)
        })
        .is_ok()
}

/// Writes a new LUKS2 header with one key slot for `pass`.
pub fn format(dev: &Path, pass: &Passphrase, o: &FormatOptions) -> Result<()> {
    let what = || format!("formatting LUKS2 on {}", dev.display());
    let mut cd = CryptInit::init(dev).with_context(what)?;
    let pbkdf = match o.kdf {
        Kdf::Pbkdf2 => Some(CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: PBKDF2_ITERATIONS,
            max_memory_kb: 0,
            parallel_threads: 0,
            flags: CryptPbkdf::NO_BENCHMARK,
        }),
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
    cd.context_handle()
        .format(
            EncryptionFormat::Luks2,
            CIPHER,
            None,
            Either::Right(VOLUME_KEY_BYTES),
            Some(&mut params_ref),
        )
        .with_context(what)?;
    cd.keyslot_handle()
        .add_by_key(None, None, pass.expose(), CryptVolumeKey::empty())
        .with_context(|| format!("adding a key slot on {}", dev.display()))?;
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
    Ok(())
}

/// Opens the LUKS2 volume on `dev` as /dev/mapper/`name`.
///
/// A passphrase that opens no key slot is [`Failure::KeyUnavailable`]
/// (exit 4); the header is not written to.
pub fn open(
    dev: &Path,
    name: &str,
    pass: &Passphrase,
    discard: bool,
    key_from: &str,
) -> Result<()> {
    let mut cd = CryptInit::init(dev).with_context(|| format!("opening {}", dev.display()))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .with_context(|| format!("loading the LUKS2 header of {}", dev.display()))?;
    let flags = if discard {
        CryptActivate::ALLOW_DISCARDS
    } else {
        CryptActivate::empty()
    };
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
            "/dev/mapper/{name} appeared while secretfs was opening {}",
            dev.display()
        ))
        .into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("activating {} as /dev/mapper/{name}", dev.display()))),
    }
}

/// Closes /dev/mapper/`name` (and drops its key from the kernel keyring).
pub fn close(name: &str) -> Result<()> {
    let mut cd = CryptInit::init_by_name_and_header(name, None)
        .with_context(|| format!("looking up /dev/mapper/{name}"))?;
    cd.activate_handle()
        .deactivate(name, CryptDeactivate::empty())
        .map_err(|e| {
            let busy = errno(&e) == Some(libc::EBUSY);
            anyhow::Error::new(e).context(if busy {
                format!("closing /dev/mapper/{name}: it is busy (still mounted or open)")
            } else {
                format!("closing /dev/mapper/{name}")
            })
        })
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
    /// Activation flags stored in the header.
    pub persistent_flags: Vec<String>,
}

/// Reads the LUKS header of `dev`; `Ok(None)` if it is not LUKS.
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
    let (mut pbkdf, mut pbkdf_iterations) = (None, None);
    for slot in 0..32 {
        if let Ok(p) = cd.keyslot_handle().get_pbkdf(slot) {
            pbkdf = Some(
                match p.type_ {
                    CryptKdf::Pbkdf2 => "pbkdf2",
                    CryptKdf::Argon2I => "argon2i",
                    CryptKdf::Argon2Id => "argon2id",
                }
                .to_string(),
            );
            pbkdf_iterations = Some(p.iterations);
            break;
        }
    }
    let persistent_flags = if version == 2 {
        cd.luks2_flag_handle::<CryptActivate>()
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
            .unwrap_or_default()
    } else {
        Vec::new()
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
        persistent_flags,
    }))
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

    #[test]
    fn kernel_versions() {
        assert!(kernel_at_least("6.1.0-56-amd64", 5, 9));
        assert!(kernel_at_least("5.9.0", 5, 9));
        assert!(!kernel_at_least("5.4.0-1103-aws", 5, 9));
        assert!(!kernel_at_least("4.14.355-275.582.amzn2.x86_64", 5, 9));
        assert!(!kernel_at_least("garbage", 5, 9));
    }

    #[test]
    fn format_and_inspect_a_plain_file() {
        // LUKS2 formatting needs no device-mapper: it runs on any machine.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("v.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let pass = Passphrase::generate(64).unwrap();
        let o = FormatOptions {
            label: "unit".into(),
            sector_size: 4096,
            kdf: Kdf::Pbkdf2,
            no_workqueues: true,
            discard: false,
        };
        format(&img, &pass, &o).unwrap();
        assert!(loads_as_luks2(&img));
        let info = inspect(&img).unwrap().expect("a LUKS header");
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
        assert_eq!(
            info.persistent_flags,
            vec!["no_read_workqueue", "no_write_workqueue"]
        );
        let sig = crate::probe::signature(&img).unwrap();
        assert!(sig.is_ours(), "{sig:?}");
        // A file that is not LUKS.
        let plain = dir.path().join("p.img");
        std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
        assert!(!loads_as_luks2(&plain));
        assert!(inspect(&plain).unwrap().is_none());
    }
}
