//! The KMS ciphertext blob as stored: raw bytes, or the same base64-encoded
//! (what `aws kms encrypt --output text` prints).

use base64::Engine;

/// Largest stored blob accepted: a KMS ciphertext of the largest plaintext
/// (4096 bytes) is under 6 KiB raw, 8 KiB in base64.
pub const MAX_STORED: usize = 16 * 1024;
/// Largest decoded ciphertext accepted.
pub const MAX_CIPHERTEXT: usize = 6 * 1024 + 512;
/// Smallest plausible KMS ciphertext (header, key reference, IV, tag).
pub const MIN_CIPHERTEXT: usize = 64;

/// Decodes a stored blob into ciphertext bytes.
///
/// Text that is entirely base64 (white space allowed) is decoded; anything
/// else is taken as the raw ciphertext. Returns a message fit for the
/// operator on a blob that cannot be a KMS ciphertext.
pub fn decode(stored: &[u8]) -> Result<Vec<u8>, String> {
    if stored.len() > MAX_STORED {
        return Err(format!(
            "the blob is {} bytes; a KMS ciphertext is under {} bytes: is it the right object?",
            stored.len(),
            MAX_CIPHERTEXT
        ));
    }
    let text: Vec<u8> = stored
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let is_b64 = !text.is_empty()
        && text
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
    let raw = if is_b64 {
        base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|e| format!("the blob looks like base64 but does not decode ({e})"))?
    } else {
        stored.to_vec()
    };
    if raw.len() < MIN_CIPHERTEXT {
        return Err(format!(
            "the blob is only {} bytes: it is not a KMS ciphertext (truncated or empty?)",
            raw.len()
        ));
    }
    if raw.len() > MAX_CIPHERTEXT {
        return Err(format!(
            "the blob decodes to {} bytes; a KMS ciphertext is under {MAX_CIPHERTEXT}",
            raw.len()
        ));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_ciphertext() -> Vec<u8> {
        (0..200u32).map(|i| (i * 37 % 251) as u8 | 0x80).collect()
    }

    #[test]
    fn raw_and_base64_give_the_same_bytes() {
        let raw = fake_ciphertext();
        assert_eq!(decode(&raw).unwrap(), raw);
        let mut b64 = base64::engine::general_purpose::STANDARD
            .encode(&raw)
            .into_bytes();
        b64.push(b'\n');
        assert_eq!(decode(&b64).unwrap(), raw);
    }

    #[test]
    fn rejects_what_cannot_be_a_ciphertext() {
        assert!(decode(b"").is_err());
        assert!(decode(&fake_ciphertext()[..20]).is_err());
        assert!(decode(&vec![0x81; MAX_STORED + 1]).is_err());
        assert!(decode(&vec![0x81; MAX_CIPHERTEXT + 1]).is_err());
        assert!(decode(b"QUJD=QUJD").is_err());
    }
}
