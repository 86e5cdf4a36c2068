//! The key slots of an existing LUKS2 volume, for `secretfs rotate`: which
//! slot a passphrase opens, adding a slot, destroying one. Checking a
//! passphrase activates nothing (libcryptsetup's activation without a
//! name), so these work while the volume is open.

use std::path::Path;

use anyhow::{Context, Result};
use libcryptsetup_rs::consts::vals::KeyslotInfo;
use libcryptsetup_rs::CryptDevice;

use super::header::{self, errno};
use crate::keys::Passphrase;

fn load(dev: &Path) -> Result<CryptDevice> {
    header::load(dev)?.with_context(|| format!("{} has no LUKS2 header", dev.display()))
}

/// The key slot `pass` opens on `dev`, if any.
pub fn opened_by(dev: &Path, pass: &Passphrase) -> Result<Option<u32>> {
    let mut cd = load(dev)?;
    match cd.activate_handle().activate_by_passphrase(
        None,
        None,
        pass.expose(),
        libcryptsetup_rs::consts::flags::CryptActivate::empty(),
    ) {
        Ok(slot) => Ok(Some(slot)),
        Err(e) if errno(&e) == Some(libc::EPERM) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e))
            .with_context(|| format!("checking a key against {}", dev.display())),
    }
}

/// Adds a key slot for `new` on `dev` (PBKDF2: a data key needs no
/// stretching), with the volume key that `by` unlocks; returns its number.
pub fn add(dev: &Path, by: &Passphrase, new: &Passphrase) -> Result<u32> {
    let what = || format!("adding a key slot on {}", dev.display());
    let mut cd = load(dev)?;
    cd.settings_handle()
        .set_pbkdf_type(&super::pbkdf2())
        .with_context(what)?;
    cd.keyslot_handle()
        .add_by_passphrase(None, by.expose(), new.expose())
        .with_context(what)
}

/// Whether key slot `slot` of `dev` is in use.
pub fn in_use(dev: &Path, slot: u32) -> Result<bool> {
    let mut cd = load(dev)?;
    let s = cd
        .keyslot_handle()
        .status(slot)
        .with_context(|| format!("reading key slot {slot} of {}", dev.display()))?;
    Ok(holds_a_key(s))
}

/// Whether a key slot in this state holds key material (bound to the
/// volume or not).
pub(super) fn holds_a_key(s: KeyslotInfo) -> bool {
    matches!(
        s,
        KeyslotInfo::Active | KeyslotInfo::ActiveLast | KeyslotInfo::Unbound
    )
}

/// Destroys key slot `slot` of `dev`.
pub fn destroy(dev: &Path, slot: u32) -> Result<()> {
    let mut cd = load(dev)?;
    cd.keyslot_handle()
        .destroy(slot)
        .with_context(|| format!("destroying key slot {slot} of {}", dev.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::luks::format;
    use crate::luks::tests::{given, image_and_pass, options};

    #[test]
    fn a_slot_is_added_found_and_destroyed() {
        let (_dir, img, a) = image_and_pass();
        let b = Passphrase::generate(64).unwrap();
        format(&img, given(&a), &options(), None, None).unwrap();
        assert_eq!(opened_by(&img, &a).unwrap(), Some(0));
        assert_eq!(opened_by(&img, &b).unwrap(), None);
        let slot = add(&img, &a, &b).unwrap();
        assert_eq!(slot, 1);
        assert_eq!(opened_by(&img, &b).unwrap(), Some(1));
        assert!(in_use(&img, 0).unwrap() && in_use(&img, 1).unwrap());
        destroy(&img, 0).unwrap();
        assert!(!in_use(&img, 0).unwrap());
        assert_eq!(opened_by(&img, &a).unwrap(), None);
        assert_eq!(opened_by(&img, &b).unwrap(), Some(1));
        let info = header::inspect(&img).unwrap().unwrap();
        assert_eq!(info.pbkdf.as_deref(), Some("pbkdf2"));
        // The wrong key adds nothing.
        assert!(add(&img, &a, &a).is_err());
    }
}
