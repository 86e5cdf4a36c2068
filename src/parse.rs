//! Pure parsers for command-line and config values.
//!
//! Each returns `Result<T, String>` so clap can use it as a `value_parser`
//! (a malformed value is then a usage error, exit 2, with the flag named),
//! and the config loader reuses the same functions. No I/O here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::names;

/// Parses a size such as `512M`, `2G`, `2GiB`, `10T` or `1048576`.
///
/// Suffixes K, M, G, T, P (optionally followed by `i`, `B` or `iB`) are
/// powers of 1024, as `truncate(1)` and `losetup` read them.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "'{s}' is not a size: use a number with an optional unit, e.g. 512M or 2G"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is too large a size"))?;
    let shift = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}': use K, M, G, T or P (powers of 1024)"
            ))
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large a size"))?;
    if bytes == 0 {
        return Err("a size of zero makes no volume: give e.g. 2G".into());
    }
    Ok(bytes)
}

/// Where a KMS-wrapped key blob lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobLocation {
    /// An S3 object.
    S3 { bucket: String, key: String },
    /// A local file.
    File(PathBuf),
}

impl fmt::Display for BlobLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlobLocation::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            BlobLocation::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parses `s3://BUCKET/KEY` or a local path.
pub fn blob_location(s: &str) -> Result<BlobLocation, String> {
    if s.is_empty() {
        return Err("an empty location: give s3://BUCKET/KEY or a file path".into());
    }
    let lower = s.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("s3://").map(|_| &s[5..]) {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| format!("'{s}' names no object: use s3://BUCKET/KEY"))?;
        bucket_name(bucket).map_err(|e| format!("'{s}': {e}"))?;
        if key.is_empty() {
            return Err(format!("'{s}' names no object: use s3://BUCKET/KEY"));
        }
        if key.len() > 1024 {
            return Err(format!("'{s}': an S3 key is at most 1024 bytes"));
        }
        return Ok(BlobLocation::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        });
    }
    if lower.starts_with("s3:") || lower.contains("://") {
        return Err(format!("'{s}' is neither s3://BUCKET/KEY nor a file path"));
    }
    Ok(BlobLocation::File(PathBuf::from(s)))
}

/// Checks an S3 bucket name (the general-purpose bucket rules).
pub fn bucket_name(b: &str) -> Result<(), String> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ends_ok = b
        .bytes()
        .next()
        .zip(b.bytes().last())
        .is_some_and(|(f, l)| f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric());
    if !(3..=63).contains(&b.len()) || !ok_chars || !ends_ok || b.contains("..") {
        return Err(format!(
            "'{b}' is not a valid bucket name (3-63 of a-z 0-9 . -, starting and ending alphanumeric)"
        ));
    }
    Ok(())
}

/// One `KEY=VALUE` pair of a KMS encryption context.
pub fn context_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    if k.is_empty() {
        return Err(format!("'{s}' has an empty key: use KEY=VALUE"));
    }
    if k.chars().chain(v.chars()).any(char::is_control) {
        return Err(format!("'{s}' contains a control character"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Collects context pairs, refusing a key given twice with different values.
pub fn context(pairs: &[(String, String)]) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(old) = map.insert(k.clone(), v.clone()) {
            if &old != v {
                return Err(format!(
                    "encryption context key '{k}' is given twice ('{old}' and '{v}')"
                ));
            }
        }
    }
    Ok(map)
}

/// Parses a duration: `30s`, `5m`, `1h30m`, `500ms`; a bare number is seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()) {
        Duration::from_secs(t.parse().map_err(|_| format!("'{s}' is too long"))?)
    } else {
        humantime::parse_duration(t)
            .map_err(|e| format!("'{s}' is not a duration ({e}): use e.g. 30s, 5m or 1h"))?
    };
    if d.is_zero() {
        return Err("a zero timeout allows no attempt: give e.g. 30s".into());
    }
    if d > Duration::from_secs(24 * 3600) {
        return Err(format!("'{s}' is longer than a day"));
    }
    Ok(d)
}

/// A device-mapper volume name: 1-64 of `A-Z a-z 0-9 . _ + -`, not starting
/// with `.` or `-` (it becomes a path under /dev/mapper and a LUKS label).
pub fn volume_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 {
        return Err(format!("'{s}' must be 1 to 64 characters"));
    }
    if s.contains('/') {
        return Err(format!("'{s}' contains '/': a name is not a path"));
    }
    if s.starts_with('.') || s.starts_with('-') {
        return Err(format!("'{s}' must not start with '.' or '-'"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._+-".contains(*c)))
    {
        return Err(format!("'{s}' contains '{c}': use A-Z a-z 0-9 . _ + -"));
    }
    Ok(s.to_string())
}

/// A 12-digit AWS account id.
pub fn account_id(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not a 12-digit AWS account id"))
    }
}

/// A KMS key reference: a key id, a key ARN, an alias name or an alias ARN.
pub fn kms_key(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 2048
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && (s.starts_with("alias/")
            || s.starts_with("arn:")
            || s.bytes()
                .all(|c| c.is_ascii_hexdigit() || c == b'-' || c.is_ascii_alphanumeric()));
    if ok && s != "alias/" {
        Ok(s.to_string())
    } else {
        Err(format!(
            "'{s}' is not a KMS key id, key ARN, alias/NAME or alias ARN"
        ))
    }
}

/// An endpoint URL for AWS calls (tests, VPC endpoints, local emulators).
pub fn endpoint_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("'{s}' is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.chars().any(char::is_whitespace) {
        return Err(format!("'{s}' names no host"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Whether a key may cross the connection to `url` in the clear: https,
/// or plain http to this host (loopback) or to a link-local address (the
/// instance metadata service, a local emulator's forwarded address). A
/// plain http URL to any other host is refused unless `--allow-http`.
pub fn cleartext_is_local(url: &str) -> bool {
    // The scheme in any case: the SDK reads `HTTP://` as http.
    let Some(rest) = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
    else {
        return true;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a.is_loopback() || a.is_link_local(),
        Ok(std::net::IpAddr::V6(a)) => a.is_loopback() || (a.segments()[0] & 0xffc0) == 0xfe80,
        Err(_) => false,
    }
}

/// An AWS region name such as `us-east-1`.
pub fn region(s: &str) -> Result<String, String> {
    let ok = (4..=32).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && s.contains('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("'{s}' is not an AWS region name (e.g. us-east-1)"))
    }
}

/// Mount options split into kernel flags and the filesystem's data string.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MountOptions {
    /// Flags the mount(2) flags word carries (`nodev`, `nosuid`, ...).
    pub flags: Vec<&'static str>,
    /// Everything else, passed to the filesystem as the data string.
    pub data: Vec<String>,
}

/// The mount(2) flag words secretfs understands, by option name.
pub const MOUNT_FLAG_NAMES: &[&str] = &[
    "ro",
    "nodev",
    "nosuid",
    "noexec",
    "noatime",
    "nodiratime",
    "relatime",
    "strictatime",
    "sync",
    "dirsync",
    "lazytime",
];

/// Parses `noatime,commit=60`. `nodev` and `nosuid` are always added
/// (see [`names::ALWAYS_MOUNT_OPTIONS`]) unless the options say `dev` or
/// `suid` explicitly.
pub fn mount_options(s: &str) -> Result<MountOptions, String> {
    let mut out = MountOptions::default();
    let mut allow = Vec::new();
    for opt in s.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        if opt.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("mount option '{opt}' contains white space"));
        }
        if ["rw", "defaults", "exec"].contains(&opt) {
            continue;
        }
        match MOUNT_FLAG_NAMES.iter().find(|n| **n == opt) {
            Some(n) if !out.flags.contains(n) => out.flags.push(n),
            Some(_) => {}
            None if opt == "dev" || opt == "suid" => allow.push(opt),
            None if ["remount", "bind", "rbind", "move", "private", "shared", "slave"]
                .contains(&opt) =>
            {
                return Err(format!(
                    "mount option '{opt}' changes how the mount is made, not the filesystem: leave it out"
                ))
            }
            None => out.data.push(opt.to_string()),
        }
    }
    for (i, always) in names::ALWAYS_MOUNT_OPTIONS.iter().enumerate() {
        let opposite = &always[2..];
        if allow.contains(&opposite) {
            if out.flags.contains(always) {
                return Err(format!(
                    "mount options say both '{always}' and '{opposite}'"
                ));
            }
        } else if !out.flags.contains(always) {
            out.flags.insert(i.min(out.flags.len()), always);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (s, v) in [
            ("512M", 512u64 << 20),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("2gb", 2 << 30),
            ("10T", 10 << 40),
            ("4096", 4096),
            ("1K", 1024),
            (" 3 G", 3 << 30),
        ] {
            assert_eq!(size(s), Ok(v), "{s}");
        }
        for s in [
            "",
            "G",
            "2X",
            "-1G",
            "1.5G",
            "0",
            "99999999999999999999",
            "16384P",
        ] {
            assert!(size(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn locations() {
        assert_eq!(
            blob_location("s3://my-bucket/keys/a.bin"),
            Ok(BlobLocation::S3 {
                bucket: "my-bucket".into(),
                key: "keys/a.bin".into()
            })
        );
        assert_eq!(
            blob_location("/etc/k.bin"),
            Ok(BlobLocation::File("/etc/k.bin".into()))
        );
        assert_eq!(
            blob_location("k.bin"),
            Ok(BlobLocation::File("k.bin".into()))
        );
        for s in [
            "",
            "s3://",
            "s3://b",
            "s3://bucket/",
            "s3:/x/y",
            "s3:bucket/key",
            "s3://UPPER/key",
            "s3://a/key",
            "https://x/y",
            "s3://-bad-/k",
            "s3://a..b/k",
        ] {
            assert!(blob_location(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn contexts() {
        assert_eq!(
            context_pair("app=secretfs"),
            Ok(("app".into(), "secretfs".into()))
        );
        assert_eq!(context_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(context_pair("empty="), Ok(("empty".into(), String::new())));
        assert!(context_pair("novalue").is_err());
        assert!(context_pair("=v").is_err());
        assert!(context_pair("a=\u{7}").is_err());
        let pairs = vec![("a".into(), "1".into()), ("a".into(), "2".into())];
        assert!(context(&pairs).is_err());
        let pairs = vec![("a".into(), "1".into()), ("a".into(), "1".into())];
        assert_eq!(context(&pairs).unwrap().len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        for s in ["", "0", "0s", "5x", "-5s", "2days", "abc"] {
            assert!(duration(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn names() {
        assert!(volume_name("secretfs").is_ok());
        assert!(volume_name("scratch-1.a_b+c").is_ok());
        for s in [
            "",
            "a/b",
            "../x",
            ".hidden",
            "-x",
            "has space",
            "é",
            &"x".repeat(65),
        ] {
            assert!(volume_name(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn other_values() {
        assert!(account_id("123456789012").is_ok());
        assert!(account_id("12345678901").is_err());
        assert!(account_id("12345678901a").is_err());
        assert!(kms_key("alias/secretfs").is_ok());
        assert!(kms_key("1234abcd-12ab-34cd-56ef-1234567890ab").is_ok());
        assert!(kms_key("arn:aws:kms:us-east-1:123456789012:key/x").is_ok());
        assert!(kms_key("alias/").is_err());
        assert!(kms_key("has space").is_err());
        assert!(endpoint_url("http://127.0.0.1:4566/").is_ok());
        assert_eq!(endpoint_url("http://h/").unwrap(), "http://h");
        assert!(endpoint_url("ftp://x").is_err());
        for local in [
            "https://kms.us-east-1.amazonaws.com",
            "https://10.1.2.3",
            "http://127.0.0.1:4566",
            "http://127.9.9.9",
            "http://localhost:5000/x",
            "http://169.254.169.254",
            "http://169.254.170.100:4566",
            "http://[::1]:4566",
            "http://[fe80::1]",
            "http://user@127.0.0.1:1",
        ] {
            assert!(cleartext_is_local(local), "{local}");
        }
        for remote in [
            "http://10.0.2.2:4566",
            "http://kms.us-east-1.amazonaws.com",
            "http://192.0.2.1",
            "http://169.255.0.1",
            "http://[2001:db8::1]:80",
            "http://127.0.0.1.example.com",
            "http://localhost.example.com",
            "http://169.254.169.254@192.0.2.1/",
            "HTTP://kms.us-east-1.amazonaws.com",
            "Http://192.0.2.1:4566",
        ] {
            assert!(!cleartext_is_local(remote), "{remote}");
        }
        assert!(endpoint_url("http://").is_err());
        assert!(region("us-east-1").is_ok());
        assert!(region("US").is_err());
    }

    #[test]
    fn mount_option_split() {
        let o = mount_options("nodev,nosuid,noatime,commit=60").unwrap();
        assert_eq!(o.flags, vec!["nodev", "nosuid", "noatime"]);
        assert_eq!(o.data, vec!["commit=60".to_string()]);
        assert!(mount_options("bind").is_err());
        // User options are added to nodev,nosuid, not put in their place.
        let o = mount_options("noatime,commit=60").unwrap();
        assert_eq!(o.flags, vec!["nodev", "nosuid", "noatime"]);
        assert_eq!(
            mount_options("defaults").unwrap().flags,
            vec!["nodev", "nosuid"]
        );
        assert_eq!(
            mount_options("ro").unwrap().flags,
            vec!["nodev", "nosuid", "ro"]
        );
        // Only an explicit dev or suid lifts one of them.
        assert_eq!(mount_options("suid").unwrap().flags, vec!["nodev"]);
        assert_eq!(
            mount_options("dev,suid,noexec").unwrap().flags,
            vec!["noexec"]
        );
        assert!(mount_options("dev,nodev").is_err());
    }
}
