//! Ephemeral keys (`up --ephemeral`): every volume (every member of a set)
//! gets its own random 512-bit volume key, read from the kernel's CSPRNG
//! straight into a locked [`Passphrase`]. libcryptsetup formats the header
//! with it and adds no key slot, so the key is written nowhere; dm-crypt
//! is given it to open the volume, and this process zeroes its copy when
//! `up` ends. From then on only the kernel holds it, until the mapping is
//! closed or the machine stops: the next `up` finds a header whose key is
//! gone and makes the volume anew. No KMS, no S3, no passphrase.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Result;

use super::Passphrase;
use crate::luks::VOLUME_KEY_BYTES;

/// The volume keys made in this run, by volume UUID, until each volume is
/// opened.
#[derive(Default)]
pub struct EphemeralKeys {
    made: Mutex<HashMap<String, Passphrase>>,
}

impl EphemeralKeys {
    pub fn new() -> EphemeralKeys {
        EphemeralKeys::default()
    }

    /// What the key is, for messages.
    pub fn describe(&self) -> String {
        "a random key for each volume, held only in memory (ephemeral: the volume is made anew every boot)"
            .into()
    }

    /// A new random volume key.
    pub fn make(&self) -> Result<Passphrase> {
        Passphrase::generate(VOLUME_KEY_BYTES)
    }

    /// Keeps the key of the volume `uuid`, formatted just now, for its
    /// open.
    pub fn keep(&self, uuid: &str, key: Passphrase) {
        self.lock().insert(uuid.to_string(), key);
    }

    /// The key of the volume `uuid`, if this run made it; it is dropped
    /// (zeroed) once the caller has opened the volume with it.
    pub fn take(&self, uuid: &str) -> Option<Passphrase> {
        self.lock().remove(uuid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Passphrase>> {
        // A panic in another member's thread leaves the map itself intact.
        self.made.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_random_locked_and_taken_once() {
        let k = EphemeralKeys::new();
        let a = k.make().unwrap();
        let b = k.make().unwrap();
        assert_eq!(a.len(), VOLUME_KEY_BYTES);
        assert_ne!(a.expose(), b.expose());
        let a_bytes = a.expose().to_vec();
        k.keep("u1", a);
        assert!(k.take("u2").is_none());
        assert_eq!(k.take("u1").unwrap().expose(), a_bytes.as_slice());
        assert!(k.take("u1").is_none(), "a key was handed out twice");
    }
}
