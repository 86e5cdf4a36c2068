//! The settings of `secretfs up`: a TOML file (optional) overlaid by flags.
//!
//! The file uses the flag names as keys (`wrapped-key`, `disk`, ...), with
//! `encryption-context` as a table. Values go through the same parsers as
//! the flags. A flag replaces the file's value; the key source and the
//! target are each replaced as a group, so `--disk` on the command line
//! overrides a `file` in the config rather than conflicting with it.
//! `force` in the file applies only to the file's own target; `--force`
//! and `--no-force` override it either way.
//!
//! This is the one module that turns command-line types into
//! [`crate::settings`]; the planner and the key code never see clap.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;
use tracing::info;

use crate::cli::{self, AwsArgs, UpArgs};
use crate::error::usage;
use crate::keys::aws::AwsOptions;
use crate::keys::data_key;
use crate::names;
use crate::parse;
use crate::settings::{Filesystem, KeySpec, NoDisks, PbkdfChoice, Target, Up, Use, Volume};

/// Default deadline for getting the key.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    wrapped_key: Option<String>,
    passphrase_file: Option<PathBuf>,
    kms_key: Option<String>,
    bind_instance: Option<bool>,
    ephemeral: Option<bool>,
    kms_key_id: Option<String>,
    encryption_context: Option<BTreeMap<String, String>>,
    expected_bucket_owner: Option<String>,
    region: Option<String>,
    endpoint_url: Option<String>,
    allow_http: Option<bool>,
    timeout: Option<String>,
    disk: Option<OneOrMany>,
    no_disks: Option<NoDisks>,
    file: Option<PathBuf>,
    size: Option<String>,
    name: Option<String>,
    mount: Option<PathBuf>,
    mount_options: Option<String>,
    force: Option<bool>,
    mount_nonempty: Option<bool>,
    wipe: Option<bool>,
    discard: Option<bool>,
    pbkdf: Option<PbkdfChoice>,
    fs: Option<Filesystem>,
    each_disk: Option<bool>,
    /// `secretfs swap`'s settings.
    swap: Option<SwapSection>,
}

/// The `[swap]` table of the config file: the settings of `secretfs
/// swap`, with the flag names as keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SwapSection {
    disk: Option<PathBuf>,
    file: Option<PathBuf>,
    size: Option<String>,
    name: Option<String>,
    priority: Option<u16>,
    discard: Option<bool>,
}

/// `disk = "/dev/x"` or `disk = ["/dev/x", "/dev/y"]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(p) => vec![p],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The target named by one or more `--disk` values.
fn disk_target(disks: Vec<PathBuf>) -> Result<Target> {
    let auto = Path::new(crate::settings::AUTO);
    if disks.iter().any(|d| d == auto) {
        if disks.len() > 1 {
            return usage(
                "--disk auto takes every instance-store disk: give it alone, or name the disks",
            );
        }
        return Ok(Target::Auto);
    }
    for (i, d) in disks.iter().enumerate() {
        if d.as_os_str().is_empty() {
            return usage("a --disk path is empty");
        }
        if disks[..i].contains(d) {
            return usage(format!("--disk {} is given twice", d.display()));
        }
    }
    match disks.len() {
        0 => usage("config disk = [] names no disk"),
        1 => Ok(Target::Disk(disks.into_iter().next().unwrap())),
        _ => Ok(Target::Disks(disks)),
    }
}

/// The AWS settings from the shared flags alone (`seal`, `check-key`).
pub fn aws_options(a: &AwsArgs) -> Result<AwsOptions> {
    merge_aws(a, &FileConfig::default())
}

fn merge_aws(a: &AwsArgs, f: &FileConfig) -> Result<AwsOptions> {
    let mut encryption_context = f.encryption_context.clone().unwrap_or_default();
    let flags = parse::context(&a.encryption_context).or_else(usage)?;
    if !flags.is_empty() {
        encryption_context = flags;
    }
    for (k, v) in &encryption_context {
        parse::context_pair(&format!("{k}={v}"))
            .or_else(|e| usage(format!("config encryption-context: {e}")))?;
    }
    let endpoint_url = pick(
        &a.endpoint_url,
        &f.endpoint_url,
        "endpoint-url",
        parse::endpoint_url,
    )?;
    let allow_http = a.allow_http || f.allow_http == Some(true);
    if !allow_http {
        let named = if a.endpoint_url.is_some() {
            "--endpoint-url"
        } else {
            "config endpoint-url"
        };
        let flag = endpoint_url.as_deref().map(|u| (named, u));
        refuse_cleartext(flag, |v| std::env::var(v).ok())?;
    }
    Ok(AwsOptions {
        kms_key_id: pick(&a.kms_key_id, &f.kms_key_id, "kms-key-id", parse::kms_key)?,
        encryption_context,
        expected_bucket_owner: pick(
            &a.expected_bucket_owner,
            &f.expected_bucket_owner,
            "expected-bucket-owner",
            parse::account_id,
        )?,
        region: pick(&a.region, &f.region, "region", parse::region)?,
        endpoint_url,
        allow_http,
        timeout: match (a.timeout, &f.timeout) {
            (Some(t), _) => t,
            (None, Some(s)) => {
                parse::duration(s).or_else(|e| usage(format!("config timeout: {e}")))?
            }
            (None, None) => DEFAULT_TIMEOUT,
        },
    })
}

/// The variables through which the SDK takes endpoints (besides the
/// profile's `endpoint_url`, which only the SDK reads).
pub const ENDPOINT_ENV: [&str; 4] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
];

/// Refuses (exit 2) an endpoint that would carry keys or credentials in
/// the clear over a network: plain http to a host that is neither
/// loopback nor link-local.
fn refuse_cleartext(
    flag: Option<(&str, &str)>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let named = flag
        .map(|(what, u)| (what.to_string(), u.to_string()))
        .into_iter()
        .chain(
            ENDPOINT_ENV
                .iter()
                .filter_map(|v| env(v).map(|u| (v.to_string(), u))),
        );
    for (what, url) in named {
        if !parse::cleartext_is_local(url.trim()) {
            return usage(format!(
                "{what} {url} is plain http to a remote host: the key would cross the network in the clear; \
                 use https://, or pass --allow-http (allow-http = true) if the path is otherwise protected"
            ));
        }
    }
    Ok(())
}

/// A flag's value if given, else the config's (parsed), else `None`.
fn pick<T: Clone>(
    flag: &Option<T>,
    file: &Option<String>,
    key: &str,
    parser: fn(&str) -> Result<T, String>,
) -> Result<Option<T>> {
    match (flag, file) {
        (Some(v), _) => Ok(Some(v.clone())),
        (None, Some(s)) => parser(s)
            .map(Some)
            .or_else(|e| usage(format!("config {key}: {e}"))),
        (None, None) => Ok(None),
    }
}

/// The config file to read: the given one, else the default if it exists.
fn config_file(given: &Option<PathBuf>) -> Result<Option<FileConfig>> {
    let default = Path::new(names::DEFAULT_CONFIG);
    match given {
        Some(p) => Ok(Some(read_file(p)?)),
        None if default.exists() => {
            info!("reading {}", default.display());
            Ok(Some(read_file(default)?))
        }
        None => Ok(None),
    }
}

/// The settings of `down` and `status`: the volume name from the flag,
/// else the config's, else the default.
pub fn volume(a: &cli::VolumeArgs, mount: Option<PathBuf>, json: bool) -> Result<Volume> {
    let (name, each_disk) = match &a.name {
        Some(n) => (n.clone(), false),
        None => {
            let f = config_file(&a.config)?.unwrap_or_default();
            (name_in(&f)?, f.each_disk.unwrap_or(false))
        }
    };
    Ok(Volume {
        name,
        mount,
        json,
        each_disk,
    })
}

/// The volume name a config file gives, else the default.
fn name_in(f: &FileConfig) -> Result<String> {
    Ok(pick(&None, &f.name, "name", parse::volume_name)?
        .unwrap_or_else(|| names::DEFAULT_NAME.to_string()))
}

/// The settings of `rotate` and `rewrap`: which volume (as for `down`),
/// and the AWS settings from the flags over the config file's (its
/// encryption context is the one the data keys are bound to).
pub fn volume_and_aws(
    a: &cli::VolumeArgs,
    aws: &AwsArgs,
    json: bool,
) -> Result<(Volume, AwsOptions)> {
    let file = config_file(&a.config)?.unwrap_or_default();
    let name = match &a.name {
        Some(n) => n.clone(),
        None => name_in(&file)?,
    };
    let opts = merge_aws(aws, &file)?;
    Ok((
        Volume {
            name,
            mount: None,
            json,
            each_disk: false,
        },
        opts,
    ))
}

/// Checks who may change a config file: root (or the user running
/// secretfs) only. A file others can write could point `up` at any disk.
pub fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    crate::perm::check("config", path, meta, "go-w").or_else(usage)
}

/// Reads and parses a config file, after checking its owner and mode.
pub fn read_file(path: &Path) -> Result<FileConfig> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return usage(format!("cannot read config {}: {e}", path.display())),
    };
    let meta = f
        .metadata()
        .or_else(|e| usage(format!("cannot read config {}: {e}", path.display())))?;
    check_owner(path, &meta)?;
    let text = std::io::read_to_string(f)
        .or_else(|e| usage(format!("cannot read config {}: {e}", path.display())))?;
    parse_file(&text).or_else(|e| usage(format!("config {}: {e}", path.display())))
}

/// Parses config text (pure; the fuzz and unit tests call this).
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.message().to_string())
}

/// `up`'s settings from its flags and the config file they name.
pub fn up(args: &UpArgs) -> Result<Up> {
    resolve_up(args, config_file(&args.config)?)
}

fn pbkdf(c: cli::PbkdfChoice) -> PbkdfChoice {
    match c {
        cli::PbkdfChoice::Auto => PbkdfChoice::Auto,
        cli::PbkdfChoice::Pbkdf2 => PbkdfChoice::Pbkdf2,
        cli::PbkdfChoice::Argon2id => PbkdfChoice::Argon2id,
    }
}

fn filesystem(c: cli::FsChoice) -> Filesystem {
    match c {
        cli::FsChoice::Ext4 => Filesystem::Ext4,
        cli::FsChoice::Xfs => Filesystem::Xfs,
    }
}

/// Where `up`'s key comes from: the flags, else the config file; one of
/// wrapped-key, passphrase-file, kms-key and ephemeral.
fn key_spec(args: &UpArgs, f: &FileConfig) -> Result<KeySpec> {
    let bind_instance = args.bind_instance || f.bind_instance == Some(true);
    let from_flags =
        args.wrapped_key.is_some() || args.passphrase_file.is_some() || args.kms_key.is_some();
    let in_file = f.wrapped_key.is_some() || f.passphrase_file.is_some() || f.kms_key.is_some();
    if args.ephemeral || (f.ephemeral == Some(true) && !from_flags) {
        if in_file && !from_flags {
            return usage(
                "ephemeral and a key (wrapped-key, passphrase-file or kms-key) are both set: keep one",
            );
        }
        if bind_instance {
            return usage("--bind-instance needs --kms-key; an ephemeral key is bound to nothing");
        }
        return Ok(KeySpec::Ephemeral);
    }
    let key = match (&args.wrapped_key, &args.passphrase_file, &args.kms_key) {
        (Some(l), _, _) => KeySpec::Wrapped(l.clone()),
        (None, Some(p), _) => KeySpec::PassphraseFile(p.clone()),
        (None, None, Some(k)) => KeySpec::DataKey {
            kms_key: k.clone(),
            bind_instance,
        },
        (None, None, None) => match (&f.wrapped_key, &f.passphrase_file, &f.kms_key) {
            (Some(s), None, None) => KeySpec::Wrapped(
                parse::blob_location(s).or_else(|e| usage(format!("config wrapped-key: {e}")))?,
            ),
            (None, Some(p), None) => KeySpec::PassphraseFile(p.clone()),
            (None, None, Some(k)) => KeySpec::DataKey {
                kms_key: parse::kms_key(k).or_else(|e| usage(format!("config kms-key: {e}")))?,
                bind_instance,
            },
            (None, None, None) => KeySpec::Prompt,
            _ => return usage(
                "config sets more than one of wrapped-key, passphrase-file and kms-key: keep one",
            ),
        },
    };
    if bind_instance && !matches!(key, KeySpec::DataKey { .. }) {
        return usage("--bind-instance needs --kms-key (it binds the data keys in the header)");
    }
    Ok(key)
}

/// The settings of `secretfs swap`: the flags, else the config file's
/// `[swap]` table. Always an ephemeral key; one disk or one file.
pub fn swap(args: &cli::SwapArgs) -> Result<Up> {
    resolve_swap(args, config_file(&args.config)?)
}

/// The mapping name of `secretfs swap` (for `--off`).
pub fn swap_name(args: &cli::SwapArgs) -> Result<String> {
    let f = config_file(&args.config)?.unwrap_or_default();
    let sec = f.swap.unwrap_or_default();
    Ok(
        pick(&args.name, &sec.name, "swap name", parse::volume_name)?
            .unwrap_or_else(|| names::DEFAULT_SWAP_NAME.to_string()),
    )
}

/// Resolves `swap`'s settings from the flags and the parsed config file.
pub fn resolve_swap(args: &cli::SwapArgs, file: Option<FileConfig>) -> Result<Up> {
    let sec = file.and_then(|f| f.swap).unwrap_or_default();
    let sec_size = || {
        sec.size
            .as_deref()
            .map(parse::size)
            .transpose()
            .or_else(|e| usage(format!("config [swap] size: {e}")))
    };
    let target = match (&args.disk, &args.file, &sec.disk, &sec.file) {
        (Some(d), ..) => Target::Disk(d.clone()),
        (None, Some(p), ..) => Target::File {
            path: p.clone(),
            size: match args.size {
                Some(s) => Some(s),
                None if sec.file.as_ref() == Some(p) => sec_size()?,
                None => None,
            },
        },
        (None, None, Some(_), Some(_)) => {
            return usage("config [swap] sets both disk and file: keep one")
        }
        (None, None, Some(d), None) => Target::Disk(d.clone()),
        (None, None, None, Some(p)) => Target::File {
            path: p.clone(),
            size: sec_size()?,
        },
        (None, None, None, None) => {
            return usage(
                "no swap target: give --disk DEVICE, or --file PATH --size SIZE, or a [swap] table in the config",
            )
        }
    };
    if target.path() == Path::new(crate::settings::AUTO) {
        return usage("swap takes one disk by name, not auto (--disk auto is for volumes)");
    }
    if target.path().as_os_str().is_empty() {
        return usage("the swap target path is empty");
    }
    let priority = args.priority.or(sec.priority);
    if priority.is_some_and(|p| p > 32767) {
        return usage("config [swap] priority: 0 to 32767");
    }
    let name = pick(&args.name, &sec.name, "swap name", parse::volume_name)?
        .unwrap_or_else(|| names::DEFAULT_SWAP_NAME.to_string());
    Ok(Up {
        key: KeySpec::Ephemeral,
        aws: merge_aws(&AwsArgs::default(), &FileConfig::default())?,
        target,
        no_disks: NoDisks::Error,
        name,
        mount: PathBuf::new(),
        mount_options: parse::mount_options(names::DEFAULT_MOUNT_OPTIONS)
            .or_else(|e| usage(format!("mount options: {e}")))?,
        force: false,
        mount_nonempty: false,
        wipe: false,
        discard: args.discard || sec.discard == Some(true),
        pbkdf: PbkdfChoice::Auto,
        inside: Use::Swap { priority },
        each_disk: false,
        disk_index: None,
        dry_run: args.dry_run,
        json: args.json,
    })
}

/// Resolves `up`'s settings from the flags and the config file. `config`
/// is the parsed file, if one was read.
pub fn resolve_up(args: &UpArgs, file: Option<FileConfig>) -> Result<Up> {
    let f = file.unwrap_or_default();
    let key = key_spec(args, &f)?;
    let target_from_flags = !args.disk.is_empty() || args.file.is_some();
    let target = if !args.disk.is_empty() {
        disk_target(args.disk.clone())?
    } else if let Some(p) = &args.file {
        let size = match (args.size, &f.size) {
            (Some(s), _) => Some(s),
            (None, Some(s)) if f.file.as_ref() == Some(p) => {
                Some(parse::size(s).or_else(|e| usage(format!("config size: {e}")))?)
            }
            _ => None,
        };
        Target::File {
            path: p.clone(),
            size,
        }
    } else {
        match (&f.disk, &f.file) {
            (Some(_), Some(_)) => return usage("config sets both disk and file: keep one"),
            (Some(d), None) => disk_target(d.clone().into_vec())?,
            (None, Some(p)) => Target::File {
                path: p.clone(),
                size: f
                    .size
                    .as_deref()
                    .map(parse::size)
                    .transpose()
                    .or_else(|e| usage(format!("config size: {e}")))?,
            },
            (None, None) => {
                return usage("no target: give --disk DEVICE, or --file PATH --size SIZE")
            }
        }
    };
    if target.path().as_os_str().is_empty() {
        return usage("the target path is empty");
    }
    let name = pick(&args.name, &f.name, "name", parse::volume_name)?
        .unwrap_or_else(|| names::DEFAULT_NAME.to_string());
    let mount = args
        .mount
        .clone()
        .or(f.mount.clone())
        .unwrap_or_else(|| PathBuf::from(names::DEFAULT_MOUNT));
    if !mount.is_absolute() {
        return usage(format!(
            "mount point {} is not an absolute path",
            mount.display()
        ));
    }
    if mount == Path::new("/") {
        return usage("mount point / is the root filesystem: choose e.g. /mnt/secretfs");
    }
    let opts_text = args
        .mount_options
        .clone()
        .or(f.mount_options.clone())
        .unwrap_or_else(|| names::DEFAULT_MOUNT_OPTIONS.to_string());
    let mount_options =
        parse::mount_options(&opts_text).or_else(|e| usage(format!("mount options: {e}")))?;
    // --force / --no-force win; the file's `force` only for its own target.
    let force = if args.no_force {
        false
    } else if args.force {
        true
    } else if target_from_flags {
        if f.force == Some(true) {
            info!(
                "the config's force = true applies to its own target, not to {}; not forcing",
                target.path().display()
            );
        }
        false
    } else {
        f.force.unwrap_or(false)
    };
    let no_disks = match args.no_disks {
        Some(cli::NoDisks::Error) => NoDisks::Error,
        Some(cli::NoDisks::Ok) => NoDisks::Ok,
        None => f.no_disks.unwrap_or(NoDisks::Error),
    };
    let each_disk = args.each_disk || f.each_disk.unwrap_or(false);
    if each_disk && matches!(target, Target::File { .. }) {
        return usage(
            "each-disk takes disks (--disk auto, or several --disk), not a loop-backed file",
        );
    }
    let aws = merge_aws(&args.aws, &f)?;
    if let Some(k) = aws
        .encryption_context
        .keys()
        .find(|k| k.starts_with(data_key::CONTEXT_RESERVED))
    {
        return usage(format!(
            "encryption-context key {k} is reserved: secretfs sets the {}* keys itself",
            data_key::CONTEXT_RESERVED
        ));
    }
    Ok(Up {
        key,
        aws,
        target,
        no_disks,
        name,
        mount,
        mount_options,
        force,
        mount_nonempty: args.mount_nonempty || f.mount_nonempty.unwrap_or(false),
        wipe: args.wipe || f.wipe.unwrap_or(false),
        discard: args.discard || f.discard.unwrap_or(false),
        pbkdf: args
            .pbkdf
            .map(pbkdf)
            .or(f.pbkdf)
            .unwrap_or(PbkdfChoice::Auto),
        inside: Use::Filesystem {
            fs: args.fs.map(filesystem).or(f.fs),
        },
        each_disk,
        disk_index: None,
        dry_run: args.dry_run,
        json: args.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{exit_code_of, EXIT_USAGE};
    use crate::parse::BlobLocation;

    #[test]
    fn cleartext_endpoints_to_remote_hosts_are_refused_wherever_named() {
        let none = |_: &str| None;
        let flag = |u| Some(("--endpoint-url", u));
        assert!(refuse_cleartext(flag("http://127.0.0.1:4566"), none).is_ok());
        assert!(refuse_cleartext(flag("https://kms.example.com"), none).is_ok());
        let e = refuse_cleartext(flag("http://10.0.0.5:4566"), none).unwrap_err();
        assert_eq!(exit_code_of(&e), EXIT_USAGE);
        assert!(
            e.to_string()
                .contains("--endpoint-url http://10.0.0.5:4566"),
            "{e}"
        );
        for var in ENDPOINT_ENV {
            let env = |v: &str| (v == var).then(|| "http://192.0.2.7".to_string());
            let e = refuse_cleartext(None, env).unwrap_err();
            assert!(e.to_string().starts_with(var), "{e}");
            assert!(e.to_string().contains("--allow-http"), "{e}");
        }
        let local = |_: &str| Some("http://169.254.169.254".to_string());
        assert!(refuse_cleartext(None, local).is_ok());
    }

    #[test]
    fn allow_http_in_the_file_or_the_flag_lets_a_remote_http_endpoint_through() {
        let remote = parse_file(r#"endpoint-url = "http://10.0.0.5:4566""#).unwrap();
        let e = merge_aws(&AwsArgs::default(), &remote).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("config endpoint-url http://10.0.0.5:4566"),
            "{e}"
        );
        let allowed =
            parse_file("endpoint-url = \"http://10.0.0.5:4566\"\nallow-http = true").unwrap();
        assert!(merge_aws(&AwsArgs::default(), &allowed).is_ok());
        let flag = AwsArgs {
            allow_http: true,
            ..AwsArgs::default()
        };
        assert!(merge_aws(&flag, &remote).is_ok());
    }

    const FULL: &str = r#"
wrapped-key = "s3://secretfs-keys/i-123/key.bin"
kms-key-id = "alias/secretfs"
encryption-context = { app = "secretfs", host = "i-123" }
expected-bucket-owner = "123456789012"
region = "us-east-1"
timeout = "2m"
file = "/var/lib/secretfs/volume.img"
size = "2G"
mount = "/mnt/scratch"
pbkdf = "pbkdf2"
fs = "xfs"
"#;

    #[test]
    fn file_settings_apply() {
        let c = resolve_up(&UpArgs::default(), Some(parse_file(FULL).unwrap())).unwrap();
        assert_eq!(
            c.key,
            KeySpec::Wrapped(BlobLocation::S3 {
                bucket: "secretfs-keys".into(),
                key: "i-123/key.bin".into()
            })
        );
        assert_eq!(
            c.target,
            Target::File {
                path: "/var/lib/secretfs/volume.img".into(),
                size: Some(2 << 30)
            }
        );
        assert_eq!(c.aws.encryption_context.len(), 2);
        assert_eq!(c.aws.timeout, Duration::from_secs(120));
        assert_eq!(c.mount, PathBuf::from("/mnt/scratch"));
        assert_eq!(c.pbkdf, PbkdfChoice::Pbkdf2);
        assert_eq!(c.name, "secretfs");
        assert_eq!(
            c.inside,
            Use::Filesystem {
                fs: Some(Filesystem::Xfs)
            }
        );
    }

    /// `--fs` over `fs =`; neither: none asked for (ext4 for a new
    /// volume, the recorded one for an existing one); a name secretfs
    /// does not make is refused by the file's parser.
    #[test]
    fn the_filesystem_comes_from_the_flag_then_the_file() {
        let file = || Some(parse_file("fs = \"xfs\"").unwrap());
        let ext4 = UpArgs {
            fs: Some(cli::FsChoice::Ext4),
            disk: vec!["/dev/nvme1n1".into()],
            passphrase_file: Some("-".into()),
            ..UpArgs::default()
        };
        let fs_of = |u: Up| match u.inside {
            Use::Filesystem { fs } => fs,
            Use::Swap { .. } => panic!("swap"),
        };
        assert_eq!(
            fs_of(resolve_up(&ext4, file()).unwrap()),
            Some(Filesystem::Ext4)
        );
        let none = UpArgs {
            fs: None,
            ..ext4.clone()
        };
        assert_eq!(
            fs_of(resolve_up(&none, file()).unwrap()),
            Some(Filesystem::Xfs)
        );
        assert_eq!(fs_of(resolve_up(&none, None).unwrap()), None);
        let e = parse_file("fs = \"btrfs\"").unwrap_err();
        assert!(e.contains("unknown variant `btrfs`"), "{e}");
    }

    #[test]
    fn each_disk_comes_from_the_flag_or_the_file_and_takes_disks_only() {
        let args = UpArgs {
            disk: vec!["auto".into()],
            passphrase_file: Some("-".into()),
            ..UpArgs::default()
        };
        let each = |a: &UpArgs, f: &str| resolve_up(a, Some(parse_file(f).unwrap()));
        assert!(!each(&args, "").unwrap().each_disk);
        assert!(each(&args, "each-disk = true").unwrap().each_disk);
        let flag = UpArgs {
            each_disk: true,
            ..args.clone()
        };
        let u = each(&flag, "").unwrap();
        assert!(u.each_disk && u.disk_index.is_none());
        let file = UpArgs {
            disk: vec![],
            file: Some("/var/secretfs.img".into()),
            size: Some(1 << 30),
            ..flag
        };
        let e = each(&file, "").unwrap_err();
        assert_eq!(crate::error::exit_code_of(&e), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("each-disk takes disks"), "{e}");
    }

    #[test]
    fn flags_override_the_file_by_group() {
        let args = UpArgs {
            disk: vec!["/dev/nvme1n1".into()],
            passphrase_file: Some("-".into()),
            aws: AwsArgs {
                encryption_context: vec![("x".into(), "y".into())],
                ..Default::default()
            },
            ..Default::default()
        };
        let c = resolve_up(&args, Some(parse_file(FULL).unwrap())).unwrap();
        assert_eq!(c.target, Target::Disk("/dev/nvme1n1".into()));
        assert_eq!(c.key, KeySpec::PassphraseFile("-".into()));
        assert_eq!(
            c.aws.encryption_context.get("x").map(String::as_str),
            Some("y")
        );
        assert_eq!(c.aws.encryption_context.len(), 1);
    }

    #[test]
    fn kms_key_keeps_data_keys_in_the_header() {
        let disk = vec![PathBuf::from("/dev/xvdb")];
        let args = UpArgs {
            disk: disk.clone(),
            kms_key: Some("alias/secretfs".into()),
            bind_instance: true,
            ..Default::default()
        };
        assert_eq!(
            resolve_up(&args, None).unwrap().key,
            KeySpec::DataKey {
                kms_key: "alias/secretfs".into(),
                bind_instance: true
            }
        );
        let file = parse_file("kms-key = \"alias/k\"\nbind-instance = true\n").unwrap();
        let from_file = UpArgs {
            disk: disk.clone(),
            ..Default::default()
        };
        assert_eq!(
            resolve_up(&from_file, Some(file)).unwrap().key,
            KeySpec::DataKey {
                kms_key: "alias/k".into(),
                bind_instance: true
            }
        );
        // Refused: two key modes in the file, --bind-instance without
        // --kms-key, a context key secretfs sets itself.
        let two = parse_file("kms-key = \"alias/k\"\nwrapped-key = \"s3://b/k\"\n").unwrap();
        let e = resolve_up(&from_file, Some(two)).unwrap_err();
        assert!(format!("{e}").contains("more than one of"), "{e}");
        let bind_alone = UpArgs {
            disk: disk.clone(),
            passphrase_file: Some("-".into()),
            bind_instance: true,
            ..Default::default()
        };
        let e = resolve_up(&bind_alone, None).unwrap_err();
        assert!(
            format!("{e}").contains("--bind-instance needs --kms-key"),
            "{e}"
        );
        let reserved = UpArgs {
            aws: AwsArgs {
                encryption_context: vec![("secretfs:volume".into(), "x".into())],
                ..Default::default()
            },
            ..args
        };
        let e = resolve_up(&reserved, None).unwrap_err();
        assert!(format!("{e}").contains("is reserved"), "{e}");
    }

    #[test]
    fn swap_settings_from_flags_over_the_swap_table() {
        let flags = cli::SwapArgs {
            disk: Some("/dev/nvme1n1".into()),
            priority: Some(5),
            ..Default::default()
        };
        let s = resolve_swap(&flags, None).unwrap();
        assert_eq!(s.key, KeySpec::Ephemeral);
        assert_eq!(s.target, Target::Disk("/dev/nvme1n1".into()));
        assert_eq!(s.inside, Use::Swap { priority: Some(5) });
        assert_eq!(s.name, names::DEFAULT_SWAP_NAME);
        let file = || {
            parse_file(
                "disk = \"/dev/xvdb\"\n[swap]\nfile = \"/var/swap.img\"\nsize = \"1G\"\npriority = 3\nname = \"sw\"\n",
            )
            .unwrap()
        };
        let s = resolve_swap(&cli::SwapArgs::default(), Some(file())).unwrap();
        assert_eq!(
            s.target,
            Target::File {
                path: "/var/swap.img".into(),
                size: Some(1 << 30)
            }
        );
        assert_eq!(
            (s.name.as_str(), s.inside),
            ("sw", Use::Swap { priority: Some(3) })
        );
        // The flags' target replaces the table's as a whole.
        let s = resolve_swap(&flags, Some(file())).unwrap();
        assert_eq!(s.target, Target::Disk("/dev/nvme1n1".into()));
        assert_eq!(s.inside, Use::Swap { priority: Some(5) });
        // `up` reads the same file and ignores the table.
        let up = UpArgs {
            passphrase_file: Some("-".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve_up(&up, Some(file())).unwrap().target,
            Target::Disk("/dev/xvdb".into())
        );
        for (text, flags, says) in [
            ("", cli::SwapArgs::default(), "no swap target"),
            (
                "[swap]\ndisk = \"/dev/a\"\nfile = \"/b\"\n",
                cli::SwapArgs::default(),
                "both disk and file",
            ),
            (
                "",
                cli::SwapArgs {
                    disk: Some("auto".into()),
                    ..Default::default()
                },
                "not auto",
            ),
            (
                "[swap]\ndisk = \"/dev/a\"\npriority = 40000\n",
                cli::SwapArgs::default(),
                "0 to 32767",
            ),
        ] {
            let e = resolve_swap(&flags, Some(parse_file(text).unwrap())).unwrap_err();
            assert!(format!("{e}").contains(says), "{text}: {e}");
            assert_eq!(exit_code_of(&e), EXIT_USAGE);
        }
    }

    #[test]
    fn ephemeral_is_a_key_mode_of_its_own() {
        let disk = vec![PathBuf::from("/dev/xvdb")];
        let flag = UpArgs {
            disk: disk.clone(),
            ephemeral: true,
            ..Default::default()
        };
        assert_eq!(resolve_up(&flag, None).unwrap().key, KeySpec::Ephemeral);
        let bare = UpArgs {
            disk: disk.clone(),
            ..Default::default()
        };
        let file = || parse_file("ephemeral = true\n").unwrap();
        assert_eq!(
            resolve_up(&bare, Some(file())).unwrap().key,
            KeySpec::Ephemeral
        );
        // A key on the command line wins over the file's mode, as for the
        // other key settings.
        let pf = UpArgs {
            passphrase_file: Some("-".into()),
            ..bare.clone()
        };
        assert_eq!(
            resolve_up(&pf, Some(file())).unwrap().key,
            KeySpec::PassphraseFile("-".into())
        );
        // Refused: ephemeral beside a key in the file, with --bind-instance.
        let both = parse_file("ephemeral = true\nkms-key = \"alias/k\"\n").unwrap();
        let e = resolve_up(&bare, Some(both)).unwrap_err();
        assert!(format!("{e}").contains("keep one"), "{e}");
        let bound = UpArgs {
            bind_instance: true,
            ..flag
        };
        let e = resolve_up(&bound, None).unwrap_err();
        assert!(
            format!("{e}").contains("--bind-instance needs --kms-key"),
            "{e}"
        );
    }

    #[test]
    fn defaults_without_a_file() {
        let args = UpArgs {
            disk: vec!["/dev/xvdb".into()],
            ..Default::default()
        };
        let c = resolve_up(&args, None).unwrap();
        assert_eq!(c.key, KeySpec::Prompt);
        assert_eq!(c.mount, PathBuf::from("/mnt/secretfs"));
        assert_eq!(c.aws.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.mount_options.flags, vec!["nodev", "nosuid", "noatime"]);
        assert!(!c.force && !c.mount_nonempty);
    }

    #[test]
    fn force_follows_flag_over_file_and_only_for_the_files_target() {
        let forced = format!("{FULL}force = true\n");
        let file = || Some(parse_file(&forced).unwrap());
        // The file's own target: its force applies...
        assert!(resolve_up(&UpArgs::default(), file()).unwrap().force);
        // ...unless --no-force says no.
        let no = UpArgs {
            no_force: true,
            ..Default::default()
        };
        assert!(!resolve_up(&no, file()).unwrap().force);
        // Another target named by a flag does not inherit it.
        let other = UpArgs {
            disk: vec!["/dev/nvme1n1".into()],
            ..Default::default()
        };
        assert!(!resolve_up(&other, file()).unwrap().force);
        let other_forced = UpArgs {
            force: true,
            ..other
        };
        assert!(resolve_up(&other_forced, file()).unwrap().force);
    }

    #[test]
    fn config_files_others_can_write_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, "disk = \"/dev/x\"\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_file(&p).is_ok());
        for (mode, word) in [(0o664, "group"), (0o646, "everyone")] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = read_file(&p).unwrap_err();
            assert_eq!(exit_code_of(&e), EXIT_USAGE);
            let m = format!("{e:#}");
            assert!(m.contains(word) && m.contains("chmod go-w"), "{m}");
        }
        // Owned by someone else (not root, not us).
        let meta = std::fs::metadata(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&p, Some(nix::unistd::Uid::from_raw(4242)), None).unwrap();
            let e = read_file(&p).unwrap_err();
            assert!(format!("{e:#}").contains("uid 4242"), "{e:#}");
        } else {
            assert!(check_owner(&p, &meta).is_ok());
        }
    }

    #[test]
    fn bad_files_are_usage_errors() {
        for text in [
            "unknown-key = 1",
            "size = 5",
            "disk = \"/dev/a\"\nfile = \"/b\"",
            "file = \"/b\"\nsize = \"2X\"",
            "disk = \"/d\"\nname = \"a/b\"",
            "disk = \"/d\"\ntimeout = \"soon\"",
            "disk = \"/d\"\nwrapped-key = \"s3://\"",
            "disk = \"/d\"\nmount = \"relative\"",
            "[[[",
        ] {
            let r = parse_file(text)
                .map_err(|e| usage::<()>(e).unwrap_err())
                .and_then(|f| resolve_up(&UpArgs::default(), Some(f)));
            let e = r.expect_err(text);
            assert_eq!(exit_code_of(&e), EXIT_USAGE, "{text}: {e:#}");
        }
        let e = resolve_up(&UpArgs::default(), None).unwrap_err();
        assert!(format!("{e}").contains("no target"));
    }
}
