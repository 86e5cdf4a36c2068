//! Property tests of the pure parsers: `secretfs::parse`, the config file
//! (`config::parse_file` + `resolve_up`) and the stored-blob decoder
//! (`keys::blob::decode`). None may panic on any input, and each keeps the
//! properties stated below.
//!
//! Brief by default (a few thousand cases in all, a few seconds);
//! `PROPTEST_CASES=N` runs N cases per property instead. Failures are not
//! persisted to files: proptest prints the minimal failing input.

use std::time::Duration;

use base64::Engine;
use proptest::prelude::*;
use proptest::test_runner::Config;

use secretfs::cli::UpArgs;
use secretfs::config::{parse_file, resolve_up};
use secretfs::error::{exit_code_of, EXIT_USAGE};
use secretfs::keys::blob::{self, MAX_CIPHERTEXT, MAX_STORED, MIN_CIPHERTEXT};
use secretfs::parse::{self, BlobLocation, MOUNT_FLAG_NAMES};
use secretfs::settings::{KeySpec, Target};

/// `cases` cases per property, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let mut c = Config::default(); // reads PROPTEST_CASES
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

/// Text likely to trip a parser: anything, printable ASCII, and the
/// characters these parsers care about.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "[0-9kKmMgGtTpPiIbBsSdhuy .,:/=+_@-]{0,16}",
        "(s3|S3|https?|ftp)?:?/{0,3}[a-zA-Z0-9./=-]{0,20}",
    ]
}

/// Units of `parse::size` and their shifts.
fn unit() -> impl Strategy<Value = (String, u32)> {
    let units: Vec<(&str, u32)> = vec![
        ("", 0),
        ("B", 0),
        ("b", 0),
        ("K", 10),
        ("k", 10),
        ("KB", 10),
        ("KiB", 10),
        ("kib", 10),
        ("M", 20),
        ("MB", 20),
        ("MiB", 20),
        ("m", 20),
        ("G", 30),
        ("GB", 30),
        ("GiB", 30),
        ("g", 30),
        ("T", 40),
        ("TiB", 40),
        ("P", 50),
        ("PiB", 50),
    ];
    prop::sample::select(units).prop_map(|(u, s)| (u.to_owned(), s))
}

fn b64(x: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(x)
}

proptest! {
    #![proptest_config(config(256))]

    // ---- size ---------------------------------------------------------------

    #[test]
    fn size_never_panics_and_is_positive(s in text()) {
        if let Ok(n) = parse::size(&s) {
            prop_assert!(n > 0, "{s:?} -> 0");
        }
    }

    /// `size("{n}{unit}") == n << shift` when that fits in a u64 and is not
    /// zero; an error otherwise. White space around the number is allowed.
    #[test]
    fn size_is_n_shifted_by_the_unit(
        n in prop_oneof![1u64..=4096, any::<u64>(), Just(0u64)],
        (u, shift) in unit(),
        lead in " {0,2}",
        mid in " {0,1}",
    ) {
        let s = format!("{lead}{n}{mid}{u}");
        let want = n.checked_mul(1u64 << shift).filter(|v| *v > 0);
        match (parse::size(&s), want) {
            (Ok(got), Some(w)) => prop_assert_eq!(got, w, "{:?}", s),
            (Err(_), None) => {}
            (got, w) => prop_assert!(false, "size({s:?}) = {got:?}, want {w:?}"),
        }
    }

    #[test]
    fn size_refuses_signs_fractions_and_unknown_units(
        n in 1u64..100_000,
        d in 0u32..10,
        (u, _) in unit(),
        bad in "[a-zA-Z&&[^bBkKmMgGtTpPi]]",
    ) {
        prop_assert!(parse::size(&format!("-{n}{u}")).is_err(), "wrongly accepted");
        prop_assert!(parse::size(&format!("+{n}{u}")).is_err(), "wrongly accepted");
        prop_assert!(parse::size(&format!("{n}.{d}{u}")).is_err(), "wrongly accepted");
        prop_assert!(parse::size(&format!("{n}{bad}")).is_err(), "wrongly accepted");
    }

    // ---- blob_location ------------------------------------------------------

    #[test]
    fn blob_location_round_trips_through_display(s in text()) {
        if let Ok(loc) = parse::blob_location(&s) {
            let shown = loc.to_string();
            prop_assert_eq!(parse::blob_location(&shown), Ok(loc.clone()), "{:?} -> {:?}", s, shown);
            if let BlobLocation::S3 { bucket, key } = &loc {
                prop_assert!(parse::bucket_name(bucket).is_ok());
                prop_assert!(!key.is_empty() && key.len() <= 1024);
                prop_assert!(!bucket.contains('/'));
            }
        }
    }

    /// Every bucket the rules allow, with any key, parses to itself.
    #[test]
    fn valid_s3_uris_parse_to_their_parts(
        bucket in "[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]".prop_map(|b| b.replace("..", ".a")),
        key in "[^\u{0}]{1,200}", // at most 800 bytes
        upper in any::<bool>(),
    ) {
        let uri = format!("{}{bucket}/{key}", if upper { "S3://" } else { "s3://" });
        let want = BlobLocation::S3 { bucket: bucket.clone(), key: key.clone() };
        prop_assert_eq!(parse::blob_location(&uri), Ok(want.clone()));
        prop_assert_eq!(want.to_string(), format!("s3://{bucket}/{key}"));
    }

    #[test]
    fn invalid_buckets_are_refused(
        pre in "[a-z0-9]{0,10}",
        bad in "[A-Z_ !@#$%^&*()]",
        post in "[a-z0-9]{0,10}",
        key in "[a-z]{1,10}",
    ) {
        let bucket = format!("a{pre}{bad}{post}z");
        prop_assert!(parse::blob_location(&format!("s3://{bucket}/{key}")).is_err(), "wrongly accepted");
        prop_assert!(parse::blob_location(&format!("s3://{}/{key}", "a".repeat(64))).is_err(), "wrongly accepted");
        prop_assert!(parse::blob_location(&format!("s3://ab/{key}")).is_err(), "wrongly accepted");
    }

    // ---- context_pair --------------------------------------------------------

    #[test]
    fn context_pair_splits_at_the_first_equals(s in text()) {
        match parse::context_pair(&s) {
            Ok((k, v)) => {
                prop_assert!(!k.is_empty() && !k.contains('='));
                prop_assert_eq!(format!("{k}={v}"), s.clone());
                prop_assert!(!k.chars().chain(v.chars()).any(char::is_control));
            }
            Err(_) => prop_assert!(
                !s.contains('=') || s.starts_with('=') || s.chars().any(char::is_control),
                "{s:?} refused"
            ),
        }
    }

    // ---- duration ------------------------------------------------------------

    #[test]
    fn duration_is_positive_and_at_most_a_day(s in text()) {
        if let Ok(d) = parse::duration(&s) {
            prop_assert!(!d.is_zero() && d <= Duration::from_secs(86_400), "{s:?} -> {d:?}");
        }
    }

    #[test]
    fn duration_units(n in 1u64..=86_400, m in 1u64..=1440) {
        prop_assert_eq!(parse::duration(&n.to_string()), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse::duration(&format!("{n}s")), Ok(Duration::from_secs(n)));
        prop_assert_eq!(parse::duration(&format!("{m}m")), Ok(Duration::from_secs(m * 60)));
        prop_assert!(parse::duration(&format!("{}", 86_400 + n)).is_err(), "wrongly accepted");
        prop_assert!(parse::duration(&format!("-{n}s")).is_err(), "wrongly accepted");
    }

    // ---- volume_name -----------------------------------------------------------

    #[test]
    fn volume_name_accepts_only_safe_names(s in text()) {
        if let Ok(n) = parse::volume_name(&s) {
            prop_assert_eq!(&n, &s);
            prop_assert!(!n.contains('/'), "{n:?} has a slash");
            prop_assert!((1..=64).contains(&n.len()));
            prop_assert!(!n.starts_with('.') && !n.starts_with('-'));
            prop_assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c)));
        }
    }

    #[test]
    fn volume_names_with_a_slash_are_refused(a in "[a-z]{0,20}", b in "[a-z]{0,20}") {
        prop_assert!(parse::volume_name(&format!("{a}/{b}")).is_err(), "wrongly accepted");
    }

    #[test]
    fn valid_volume_names_are_accepted(s in "[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}") {
        prop_assert_eq!(parse::volume_name(&s), Ok(s.clone()));
    }

    // ---- mount_options ---------------------------------------------------------

    #[test]
    fn mount_options_split_cleanly(s in prop_oneof![
        text(),
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(MOUNT_FLAG_NAMES.to_vec()).prop_map(str::to_owned),
                "[a-z_]{1,8}(=[0-9]{1,3})?",
                Just("suid".to_owned()),
                Just("defaults".to_owned()),
            ],
            0..6,
        ).prop_map(|v| v.join(",")),
    ]) {
        if let Ok(o) = parse::mount_options(&s) {
            for f in &o.flags {
                prop_assert!(MOUNT_FLAG_NAMES.contains(f));
            }
            for d in &o.data {
                prop_assert!(!d.is_empty() && !d.contains(',') && !d.chars().any(char::is_whitespace));
                prop_assert!(!["suid", "dev", "exec", "remount", "bind", "move", "rw", "defaults"]
                    .contains(&d.as_str()), "{d:?} passed as data");
                prop_assert!(!MOUNT_FLAG_NAMES.contains(&d.as_str()));
            }
        }
    }

    // ---- account_id, kms_key, endpoint_url ---------------------------------------

    #[test]
    fn account_id_is_twelve_digits(s in text(), digits in "[0-9]{12}") {
        let ok = s.len() == 12 && s.bytes().all(|c| c.is_ascii_digit());
        prop_assert_eq!(parse::account_id(&s).is_ok(), ok, "{:?}", s);
        prop_assert_eq!(parse::account_id(&digits), Ok(digits.clone()));
    }

    #[test]
    fn kms_key_refuses_white_space(s in text()) {
        if let Ok(k) = parse::kms_key(&s) {
            prop_assert_eq!(&k, &s);
            prop_assert!(!k.is_empty() && k != "alias/");
            prop_assert!(!k.chars().any(|c| c.is_whitespace() || c.is_control()));
        }
    }

    #[test]
    fn kms_key_accepts_ids_arns_and_aliases(
        id in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        alias in "[a-zA-Z0-9/_-]{1,40}",
        acct in "[0-9]{12}",
    ) {
        prop_assert!(parse::kms_key(&id).is_ok());
        prop_assert!(parse::kms_key(&format!("alias/{alias}")).is_ok(), "wrongly refused");
        prop_assert!(parse::kms_key(&format!("arn:aws:kms:us-east-1:{acct}:key/{id}")).is_ok(), "wrongly refused");
    }

    #[test]
    fn endpoint_url_is_idempotent(s in text()) {
        if let Ok(u) = parse::endpoint_url(&s) {
            prop_assert!(u.starts_with("http://") || u.starts_with("https://"));
            prop_assert!(!u.ends_with('/'), "{s:?} -> {u:?}");
            prop_assert_eq!(parse::endpoint_url(&u), Ok(u.clone()));
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    // ---- blob::decode -----------------------------------------------------------

    #[test]
    fn decode_never_panics(stored in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..(MAX_STORED + 64)),
        "[A-Za-z0-9+/=\n ]{0,600}".prop_map(String::into_bytes),
    ]) {
        if let Ok(c) = blob::decode(&stored) {
            prop_assert!((MIN_CIPHERTEXT..=MAX_CIPHERTEXT).contains(&c.len()));
            prop_assert!(stored.len() <= MAX_STORED);
        }
    }

    /// A raw ciphertext (one that is not itself base64 text) decodes to
    /// itself, and its base64 (on one line, or wrapped at 76 columns with a
    /// trailing newline, as `base64(1)` writes it) decodes to the same.
    #[test]
    fn decode_of_base64_is_decode_of_raw(
        raw in prop::collection::vec(any::<u8>(), MIN_CIPHERTEXT..=MAX_CIPHERTEXT),
        at in any::<prop::sample::Index>(),
    ) {
        let mut raw = raw;
        let i = at.index(raw.len());
        raw[i] |= 0x80; // not base64 text
        prop_assert_eq!(blob::decode(&raw), Ok(raw.clone()));
        let text = b64(&raw);
        prop_assert_eq!(blob::decode(text.as_bytes()), Ok(raw.clone()));
        let wrapped: String = text
            .as_bytes()
            .chunks(76)
            .map(|l| format!("{}\n", String::from_utf8_lossy(l)))
            .collect();
        prop_assert_eq!(blob::decode(wrapped.as_bytes()), Ok(raw.clone()));
    }

    #[test]
    fn decode_refuses_implausible_lengths(
        small in prop::collection::vec(any::<u8>(), 0..MIN_CIPHERTEXT),
        big in prop::collection::vec(any::<u8>(), (MAX_CIPHERTEXT + 1)..=(MAX_CIPHERTEXT + 2048)),
    ) {
        let mut small = small;
        small.push(0x80);
        small.truncate(MIN_CIPHERTEXT - 1);
        prop_assert!(blob::decode(&small).is_err());
        prop_assert!(blob::decode(b64(&small).as_bytes()).is_err());
        let mut big = big;
        big[0] = 0x80;
        prop_assert!(blob::decode(&big).is_err());
        prop_assert!(blob::decode(b64(&big).as_bytes()).is_err());
    }

    // ---- the config file -------------------------------------------------------

    #[test]
    fn parse_file_never_panics(s in prop_oneof![
        any::<String>(),
        "([a-z-]{1,20} ?= ?(\"[ -~]{0,20}\"|[0-9]{1,5}|true|\\{[ -~]{0,20}\\}|\\[[ -~]{0,10}\\])\n){0,6}",
    ]) {
        if let Ok(f) = parse_file(&s) {
            // Whatever parses, resolving it never panics and fails only as
            // a usage error.
            if let Err(e) = resolve_up(&UpArgs::default(), Some(f)) {
                prop_assert_eq!(exit_code_of(&e), EXIT_USAGE, "{:?}: {:#}", s, e);
            }
        }
    }

    /// Configs built from the known keys, with values that are valid or
    /// arbitrary: resolving never panics, fails only as a usage error, and
    /// takes the valid values it was given.
    #[test]
    fn resolve_up_takes_a_config_or_says_why_not(cfg in config_table()) {
        let text = toml::to_string(&cfg.table).expect("serializing a table");
        let file = match parse_file(&text) {
            Ok(f) => f,
            Err(e) => {
                // A table of known keys with string values parses unless a
                // value has the wrong TOML type.
                prop_assert!(!cfg.all_valid, "valid config refused: {e}\n{text}");
                return Ok(());
            }
        };
        match resolve_up(&UpArgs::default(), Some(file)) {
            Ok(c) => {
                if let Some(n) = cfg.table.get("name").and_then(|v| v.as_str()) {
                    prop_assert_eq!(&c.name, n);
                }
                if let Some(s) = cfg.table.get("size").and_then(|v| v.as_str()) {
                    if let Target::File { size, .. } = &c.target {
                        prop_assert_eq!(*size, parse::size(s).ok());
                    }
                }
                if let Some(k) = cfg.table.get("wrapped-key").and_then(|v| v.as_str()) {
                    prop_assert_eq!(c.key.clone(), KeySpec::Wrapped(parse::blob_location(k).unwrap()));
                }
                if let Some(t) = cfg.table.get("timeout").and_then(|v| v.as_str()) {
                    prop_assert_eq!(Ok(c.aws.timeout), parse::duration(t));
                }
                prop_assert!(c.mount.is_absolute());
            }
            Err(e) => {
                prop_assert_eq!(exit_code_of(&e), EXIT_USAGE, "{:#}\n{}", e, text);
                prop_assert!(!cfg.all_valid, "valid config refused: {e:#}\n{text}");
            }
        }
    }
}

/// A generated config table and whether every value in it is valid.
#[derive(Debug, Clone)]
struct GenConfig {
    table: toml::Table,
    all_valid: bool,
}

/// (key, a strategy for valid values).
fn valid_values() -> Vec<(&'static str, BoxedStrategy<String>)> {
    vec![
        (
            "wrapped-key",
            prop_oneof![
                "s3://[a-z0-9]{3,12}/[a-z0-9/._-]{1,20}",
                "/etc/secretfs/[a-z]{1,8}\\.bin",
            ]
            .boxed(),
        ),
        ("kms-key-id", "alias/[a-z0-9-]{1,20}".boxed()),
        ("expected-bucket-owner", "[0-9]{12}".boxed()),
        ("region", "(us|eu|ap)-(east|west|south)-[1-3]".boxed()),
        (
            "endpoint-url",
            // Plain http only to loopback or link-local hosts: anything
            // else is refused unless allow-http (see the case below).
            "(https://[a-z0-9.]{1,20}|http://(127\\.0\\.0\\.1|localhost|169\\.254\\.169\\.254))(:[0-9]{2,5})?/?"
                .boxed(),
        ),
        ("timeout", "[1-9][0-9]{0,2}(s|m|ms)".boxed()),
        ("size", "[1-9][0-9]{0,3}(M|G|T|MiB|GB)".boxed()),
        ("name", "[A-Za-z0-9_+][A-Za-z0-9._+-]{0,30}".boxed()),
        ("mount", "/mnt/[a-z0-9]{1,12}".boxed()),
        (
            "mount-options",
            "(nodev|nosuid|noatime|commit=[0-9]{1,3})(,(nodev|noexec|ro|lazytime))?".boxed(),
        ),
        (
            "pbkdf",
            prop_oneof![Just("auto"), Just("pbkdf2"), Just("argon2id")]
                .prop_map(str::to_owned)
                .boxed(),
        ),
    ]
}

fn config_table() -> impl Strategy<Value = GenConfig> {
    let fields: Vec<BoxedStrategy<Option<(String, toml::Value, bool)>>> = valid_values()
        .into_iter()
        .map(|(k, valid)| {
            prop_oneof![
                3 => Just(None),
                3 => valid.prop_map(move |v| Some((k.to_owned(), toml::Value::String(v), true))),
                1 => text().prop_map(move |v| Some((k.to_owned(), toml::Value::String(v), false))),
            ]
            .boxed()
        })
        .collect();
    let target = prop_oneof![
        Just(("disk", "/dev/nvme1n1".to_owned())),
        "/var/lib/[a-z]{1,8}\\.img".prop_map(|p| ("file", p)),
    ];
    let context = prop::collection::btree_map("[a-z]{1,8}", "[ -~]{0,12}", 0..3);
    let flags = (
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
    );
    (fields, target, context, flags).prop_map(
        |(fields, (tkey, tval), ctx, (force, wipe, discard))| {
            let mut table = toml::Table::new();
            let mut all_valid = true;
            for (k, v, ok) in fields.into_iter().flatten() {
                all_valid &= ok;
                table.insert(k, v);
            }
            table.insert(tkey.to_owned(), toml::Value::String(tval));
            if !ctx.is_empty() {
                let t: toml::Table = ctx
                    .into_iter()
                    .map(|(k, v)| (k, toml::Value::String(v)))
                    .collect();
                table.insert("encryption-context".into(), toml::Value::Table(t));
            }
            for (k, v) in [("force", force), ("wipe", wipe), ("discard", discard)] {
                if let Some(b) = v {
                    table.insert(k.into(), toml::Value::Boolean(b));
                }
            }
            GenConfig { table, all_valid }
        },
    )
}

/// The properties above must not be vacuous: the generators reach the
/// accepting branches.
#[test]
fn generators_reach_valid_inputs() {
    assert_eq!(parse::size(" 3 G"), Ok(3 << 30));
    assert!(parse::blob_location("s3://abc/k").is_ok());
    assert!(parse::context_pair("a=b").is_ok());
    let text = "disk = \"/dev/x\"\nsize = \"2G\"\n";
    assert!(parse_file(text).is_ok());
}
