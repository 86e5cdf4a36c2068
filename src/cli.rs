//! The command line. `///` comments are the help text; keep it within 80
//! columns. Values are validated by the parsers in [`crate::parse`], so a
//! malformed value is a usage error (exit 2) that names the flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::parse::{self, BlobLocation};

/// Encrypted scratch storage on EC2 instance store, keyed by AWS KMS.
///
/// Exit codes: 0 done or already done, 1 failed, 2 usage error, 3 refused
/// (foreign data, mounted or busy), 4 key unavailable, 5 no instance-store
/// disk (`--disk auto`), 6 not up (`status`, `wait`).
#[derive(Debug, Parser)]
#[command(
    name = "secretfs",
    version = crate::names::VERSION,
    disable_help_subcommand = true,
    max_term_width = 80
)]
pub struct Cli {
    /// More log detail (-v debug, -vv trace); logs go to stderr
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Make the encrypted filesystem available (safe to run any number of
    /// times)
    Up(UpArgs),
    /// Unmount, close the mapping and detach a loop device secretfs attached
    Down(DownArgs),
    /// Show what is there: device, LUKS header, mapping, mount and usage;
    /// exits 6 unless the volume is open and mounted
    Status(StatusArgs),
    /// Have KMS make a passphrase (or take one) and wrap it; store the blob
    Seal(SealArgs),
    /// Fetch and decrypt the wrapped key as `up` would, without using it
    CheckKey(CheckKeyArgs),
    /// Give the open volume a new data key without reformatting (one for a
    /// whole set): a new key slot per member, then the old one removed
    /// (volumes made with --kms-key; an interrupted rotation is finished)
    Rotate(RotateArgs),
    /// Re-wrap under another KMS key with KMS ReEncrypt (the plaintext never
    /// reaches this host): the data keys in the open volume's headers, or a
    /// blob with --wrapped-key
    Rewrap(RewrapArgs),
    /// Crypto-shred the volume: unmount, close, destroy every key slot and
    /// both LUKS2 headers on every device below it (irreversible)
    Shred(ShredArgs),
    /// Make encrypted swap space with an ephemeral key (made anew every
    /// boot) and enable it; `--off` disables and closes it
    Swap(SwapArgs),
    /// Wait until the volume is open and mounted (for scripts; exits 6 at
    /// the timeout)
    Wait(WaitArgs),
    /// Write the systemd unit, and a drop-in for each service that must
    /// not start without the volume; enable the unit
    InstallUnit(InstallUnitArgs),
    /// The volume of a Kubernetes node, as EKS's setup-local-disks lays it
    /// out but encrypted: nodeadm runs it by that name (see install-unit
    /// --k8s-disks)
    SetupLocalDisks(SetupLocalDisksArgs),
    /// Write the man pages and shell completions under DIR
    #[command(hide = true)]
    Generate(GenerateArgs),
    /// Format or open one member of a set: the child process `up` starts
    /// for each (job and key on stdin, answer on stdout); not for people
    #[command(hide = true, name = "member")]
    Member,
}

/// How a passphrase is protected by the LUKS2 key slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PbkdfChoice {
    /// PBKDF2 (1000 iterations) for a KMS key, argon2id for a typed one
    Auto,
    /// PBKDF2-SHA256 with 1000 iterations (for high-entropy keys)
    Pbkdf2,
    /// argon2id, benchmarked by cryptsetup (for human passphrases)
    Argon2id,
}

/// The filesystem of a new volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsChoice {
    /// ext4
    Ext4,
    /// XFS, as ScyllaDB requires and Cassandra recommends (needs xfsprogs)
    Xfs,
}

/// What `--disk auto` does when the instance has no instance store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NoDisks {
    /// Exit 5: the unit fails, services that require it do not start
    Error,
    /// Exit 0 after one line: nothing to encrypt here
    Ok,
}

/// AWS options shared by the subcommands that reach S3 or KMS.
#[derive(Clone, Debug, Default, Args)]
pub struct AwsArgs {
    /// Pin the KMS key Decrypt may use (key id, ARN or alias/NAME)
    #[arg(long, value_name = "ID", value_parser = parse::kms_key)]
    pub kms_key_id: Option<String>,
    /// KMS encryption context pair (repeatable); must match the one sealed
    #[arg(long = "encryption-context", value_name = "KEY=VALUE",
          value_parser = parse::context_pair)]
    pub encryption_context: Vec<(String, String)>,
    /// Refuse the S3 object unless this account owns the bucket
    #[arg(long, value_name = "ACCOUNT_ID", value_parser = parse::account_id)]
    pub expected_bucket_owner: Option<String>,
    /// AWS region (default: the SDK's chain: env, profile, instance metadata)
    #[arg(long, value_parser = parse::region)]
    pub region: Option<String>,
    /// Endpoint for S3 and KMS calls (AWS_ENDPOINT_URL* also work)
    #[arg(long, value_name = "URL", value_parser = parse::endpoint_url)]
    pub endpoint_url: Option<String>,
    /// Accept http:// endpoints on hosts other than loopback and
    /// link-local addresses (keys and credentials cross in the clear)
    #[arg(long)]
    pub allow_http: bool,
    /// Deadline for getting the key, retrying throttling and network errors
    /// [default: 5m]
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    pub timeout: Option<Duration>,
}

/// Arguments of `secretfs up`.
#[derive(Clone, Debug, Default, Args)]
pub struct UpArgs {
    /// KMS-wrapped passphrase: s3://BUCKET/KEY or a file (raw or base64)
    #[arg(long, value_name = "S3_URI|PATH", value_parser = parse::blob_location,
          conflicts_with = "passphrase_file")]
    pub wrapped_key: Option<BlobLocation>,
    /// Plaintext passphrase file, or - for stdin (one trailing newline is
    /// dropped)
    #[arg(long, value_name = "PATH|-")]
    pub passphrase_file: Option<PathBuf>,
    /// Give each volume its own data key, made by KMS under this key (key
    /// id, ARN or alias/NAME) and kept wrapped in the volume's header: no
    /// S3 object
    #[arg(long, value_name = "KEY", value_parser = parse::kms_key,
          conflicts_with_all = ["wrapped_key", "passphrase_file"])]
    pub kms_key: Option<String>,
    /// With --kms-key: bind new volumes' data keys to this instance (its
    /// ARN, from instance metadata, joins the encryption context)
    #[arg(long)]
    pub bind_instance: bool,
    /// A random key that only this process and the kernel ever hold (no
    /// KMS, no key slot): the volume and its data are gone after a reboot
    /// or `down`, and the next `up` makes it anew. For scratch that must
    /// never outlive a boot
    #[arg(long, conflicts_with_all = ["wrapped_key", "passphrase_file", "kms_key", "bind_instance"])]
    pub ephemeral: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Raw block device to use (several times: one volume striped over
    /// all of them), or `auto`: every instance-store NVMe disk
    #[arg(long, value_name = "DEVICE", conflicts_with_all = ["file", "size"])]
    pub disk: Vec<PathBuf>,
    /// With `--disk auto` on an instance without instance store: `error`
    /// (exit 5, the unit fails and services that require it do not
    /// start) or `ok` (exit 0, nothing done) [default: error]
    #[arg(long, value_enum, value_name = "WHAT")]
    pub no_disks: Option<NoDisks>,
    /// Loop-backed file to use (created sparse, mode 0600, if absent)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Size of the file to create (512M, 2G, 10T; powers of 1024)
    #[arg(long, value_parser = parse::size, requires = "file", allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// Volume name: /dev/mapper/NAME [default: secretfs]
    #[arg(long, value_parser = parse::volume_name, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// Mount point, created if absent [default: /mnt/secretfs]
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// One volume per disk instead of one striped over them all: the disk
    /// with index N (kept in its header, whatever the kernel names the
    /// disk) opens as NAME-diskN, mounted at DIR/N (from 1)
    #[arg(long)]
    pub each_disk: bool,
    /// Filesystem of a new volume [default: ext4]; an existing volume
    /// keeps its own, and refuses a different --fs
    #[arg(long, value_enum, value_name = "FS")]
    pub fs: Option<FsChoice>,
    /// Mount options, added to nodev,nosuid (unless they say dev or suid)
    /// [default: noatime]
    #[arg(long, value_name = "OPTS")]
    pub mount_options: Option<String>,
    /// Mount even over a directory that is not empty (its files are hidden)
    #[arg(long)]
    pub mount_nonempty: bool,
    /// Allow formatting a device that holds foreign data (its signatures
    /// are erased first; never a mounted or held device)
    #[arg(long, overrides_with = "no_force")]
    pub force: bool,
    /// Do not format foreign data, whatever the config file says
    #[arg(long, overrides_with = "force")]
    pub no_force: bool,
    /// After a first format, overwrite the whole volume with zeros (slow)
    #[arg(long)]
    pub wipe: bool,
    /// Pass discards (TRIM) through the encryption layer
    #[arg(long)]
    pub discard: bool,
    /// Key-slot PBKDF [default: auto]
    #[arg(long, value_enum)]
    pub pbkdf: Option<PbkdfChoice>,
    /// Observe and print the plan; change nothing and fetch no key
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
    /// TOML file with the same settings; flags override it
    /// [default: /etc/secretfs/secretfs.toml if it exists]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Which volume `down`, `status` and `wait` look at.
#[derive(Clone, Debug, Args)]
pub struct VolumeArgs {
    /// Volume name [default: the config's name, else secretfs]
    #[arg(long, value_parser = parse::volume_name, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// TOML file to take the volume name from (as `up --config`)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// Arguments of `secretfs down`.
#[derive(Clone, Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// Also unmount this directory if the volume is mounted there
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs status`.
#[derive(Clone, Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs seal`.
#[derive(Clone, Debug, Args)]
pub struct SealArgs {
    /// KMS key to encrypt under (key id, ARN or alias/NAME)
    #[arg(long, value_name = "KEY", value_parser = parse::kms_key)]
    pub kms_key: String,
    /// Where to write the ciphertext blob: s3://BUCKET/KEY or a file (0600)
    #[arg(long, value_name = "S3_URI|PATH", value_parser = parse::blob_location)]
    pub to: BlobLocation,
    /// Seal this passphrase (file, or - for stdin) instead of a random one
    #[arg(long, value_name = "PATH|-")]
    pub passphrase_file: Option<PathBuf>,
    /// Overwrite an existing blob (a volume sealed with it becomes
    /// unopenable)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs check-key`.
#[derive(Clone, Debug, Args)]
pub struct CheckKeyArgs {
    /// KMS-wrapped passphrase: s3://BUCKET/KEY or a file (raw or base64)
    #[arg(long, value_name = "S3_URI|PATH", value_parser = parse::blob_location)]
    pub wrapped_key: BlobLocation,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print one JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs shred`.
#[derive(Clone, Debug, Args)]
pub struct ShredArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// Shred a closed volume on these raw block devices (each member of a
    /// set): each must hold a secretfs header (proven by its token) or read
    /// as blank already, as a set shredded in part does; anything else on
    /// any of them refuses the whole run
    #[arg(long, value_name = "DEVICE", conflicts_with = "file")]
    pub disk: Vec<PathBuf>,
    /// Shred a closed loop-backed volume in this file (as --disk)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Do not ask: destroy the volume and its data
    #[arg(long)]
    pub yes: bool,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs rotate`.
#[derive(Clone, Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// Make the new data keys under this KMS key [default: the key that
    /// wraps each member's data key now]
    #[arg(long, value_name = "KEY", value_parser = parse::kms_key)]
    pub new_kms_key: Option<String>,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs rewrap`.
#[derive(Clone, Debug, Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// The KMS key to wrap under from now on (key id, ARN or alias/NAME)
    #[arg(long, value_name = "KEY", value_parser = parse::kms_key)]
    pub new_kms_key: String,
    /// Re-wrap this blob (s3://BUCKET/KEY or a file), not a volume's keys
    #[arg(long, value_name = "S3_URI|PATH", value_parser = parse::blob_location)]
    pub wrapped_key: Option<BlobLocation>,
    /// Write the re-wrapped blob here [default: over the --wrapped-key]
    #[arg(long, value_name = "S3_URI|PATH", value_parser = parse::blob_location,
          requires = "wrapped_key")]
    pub to: Option<BlobLocation>,
    /// Replace an existing blob at --to
    #[arg(long, requires = "to")]
    pub force: bool,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs swap`.
#[derive(Clone, Debug, Default, Args)]
pub struct SwapArgs {
    /// Raw block device for the swap space (never a member of a volume)
    #[arg(long, value_name = "DEVICE", conflicts_with_all = ["file", "size"])]
    pub disk: Option<PathBuf>,
    /// Loop-backed file for the swap space (created sparse, mode 0600, if
    /// absent)
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Size of the file to create (512M, 2G; powers of 1024)
    #[arg(long, value_parser = parse::size, requires = "file", allow_hyphen_values = true)]
    pub size: Option<u64>,
    /// Swap priority, 0 to 32767: higher is used first [default: the
    /// kernel's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=32767))]
    pub priority: Option<u16>,
    /// Pass discards (TRIM) through the encryption layer and to swap
    #[arg(long)]
    pub discard: bool,
    /// Mapping name [default: the config's, else secretfs-swap]
    #[arg(long, value_parser = parse::volume_name, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// TOML file whose [swap] section holds these settings
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Disable the swap space and close it (what it held is gone)
    #[arg(long, conflicts_with_all = ["disk", "file", "size", "priority", "discard", "dry_run"])]
    pub off: bool,
    /// Observe and print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object with the outcome on stdout
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `secretfs wait`.
#[derive(Clone, Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub volume: VolumeArgs,
    /// How long to wait before giving up (exit 6)
    #[arg(long, value_name = "DURATION", value_parser = parse::duration,
          default_value = "5m")]
    pub timeout: Duration,
}

/// Arguments of `secretfs install-unit`.
#[derive(Clone, Debug, Args)]
pub struct InstallUnitArgs {
    /// A unit that must not start without the volume (repeatable; `NAME`
    /// means NAME.service): gets a drop-in with Requires= and After=
    #[arg(long, value_name = "UNIT")]
    pub requires: Vec<String>,
    /// Also start the unit now (`systemctl enable --now`)
    #[arg(long)]
    pub now: bool,
    /// The binary the unit runs [default: this one]
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// Write into this system root (an image being built) and run no
    /// systemctl
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also write and enable secretfs-swap.service, which runs `secretfs
    /// swap` from the config's [swap] section on every boot
    #[arg(long)]
    pub swap: bool,
    /// For an EKS or Karpenter node: link /usr/local/sbin/setup-local-disks
    /// to the binary (nodeadm finds it there first) and make
    /// nodeadm-run.service, kubelet.service and containerd.service require
    /// the volume
    #[arg(long)]
    pub k8s_disks: bool,
}

/// How nodeadm asks for the instance-store disks
/// (`spec.instance.localStorage.strategy`, lowercased).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DiskStrategy {
    /// One volume striped over every instance-store disk
    Raid0,
    /// The same stripe (no mirror: instance store does not outlive a stop)
    Raid10,
    /// One volume per disk at DIR/N, N from 1 and kept in each volume's
    /// header (the config says each-disk = true)
    Mount,
    /// Nothing to do
    None,
}

/// Arguments of `secretfs setup-local-disks`, those of EKS's script.
#[derive(Clone, Debug, Args)]
pub struct SetupLocalDisksArgs {
    /// raid0 or raid10 (one striped volume at DIR/0), mount, none
    #[arg(value_enum, value_name = "STRATEGY")]
    pub strategy: DiskStrategy,
    /// Where the volume is mounted, as DIR/0 (the config's mount must say
    /// so)
    #[arg(short, long, value_name = "DIR", default_value = "/mnt/k8s-disks")]
    pub dir: PathBuf,
    /// Do not bind /var/lib/kubelet onto the volume
    #[arg(long)]
    pub no_bind_kubelet: bool,
    /// Do not bind /var/lib/containerd onto the volume
    #[arg(long)]
    pub no_bind_containerd: bool,
    /// Do not bind /var/log/pods onto the volume
    #[arg(long)]
    pub no_bind_pods_logs: bool,
    /// Do not bind /var/lib/soci-snapshotter-grpc onto the volume
    #[arg(long)]
    pub no_bind_soci: bool,
    /// Bind nothing: only the volume
    #[arg(long)]
    pub no_bind_mounts: bool,
    /// The config file with the key settings [default:
    /// /etc/secretfs/secretfs.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// The name nodeadm runs (`setup-local-disks`); the binary invoked by
/// it (a link) runs that subcommand.
pub const SETUP_LOCAL_DISKS: &str = "setup-local-disks";

/// The process's arguments, with `setup-local-disks` put in as the
/// subcommand when the binary was invoked by that name.
pub fn args() -> Vec<std::ffi::OsString> {
    dispatch(std::env::args_os().collect())
}

fn dispatch(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let invoked_as = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n == SETUP_LOCAL_DISKS);
    if invoked_as == Some(true) {
        args.insert(1, SETUP_LOCAL_DISKS.into());
    }
    args
}

/// Arguments of `secretfs generate`.
#[derive(Clone, Debug, Args)]
pub struct GenerateArgs {
    /// Directory to write man/ and completions/ into
    pub dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Invoked as nodeadm does (by the link's name), with every argument
    /// EKS's script takes; `-d` as well as `--dir`.
    #[test]
    fn setup_local_disks_takes_the_stock_arguments() {
        let parse = |a: &[&str]| {
            Cli::try_parse_from(dispatch(a.iter().map(Into::into).collect())).map(|c| c.command)
        };
        let Ok(Command::SetupLocalDisks(a)) = parse(&[
            "/usr/local/sbin/setup-local-disks",
            "raid0",
            "--dir",
            "/mnt/k8s-disks",
            "--no-bind-pods-logs",
            "--no-bind-containerd",
            "--no-bind-soci",
            "--no-bind-kubelet",
            "--no-bind-mounts",
        ]) else {
            panic!()
        };
        assert_eq!(a.strategy, DiskStrategy::Raid0);
        assert_eq!(a.dir, PathBuf::from("/mnt/k8s-disks"));
        assert!(
            a.no_bind_pods_logs
                && a.no_bind_containerd
                && a.no_bind_soci
                && a.no_bind_kubelet
                && a.no_bind_mounts
        );
        for (argv, strategy) in [
            (
                &["setup-local-disks", "raid10", "-d", "/d"][..],
                DiskStrategy::Raid10,
            ),
            (&["setup-local-disks", "mount"][..], DiskStrategy::Mount),
            (&["setup-local-disks", "none"][..], DiskStrategy::None),
            (
                &["secretfs", "setup-local-disks", "raid0"][..],
                DiskStrategy::Raid0,
            ),
        ] {
            let Ok(Command::SetupLocalDisks(a)) = parse(argv) else {
                panic!("{argv:?}")
            };
            assert_eq!(a.strategy, strategy);
        }
        assert!(parse(&["setup-local-disks", "raid5"]).is_err());
        assert!(parse(&["setup-local-disks"]).is_err());
        // The binary's own name still means the binary.
        assert!(parse(&["secretfs", "raid0"]).is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_fits_80_columns() {
        let mut cmd = Cli::command();
        let mut helps = vec![cmd.render_long_help().to_string()];
        for sub in cmd.get_subcommands_mut() {
            helps.push(sub.render_long_help().to_string());
        }
        for h in helps {
            for line in h.lines() {
                assert!(line.chars().count() <= 80, "help line too wide: {line:?}");
            }
        }
    }

    #[test]
    fn malformed_values_are_usage_errors() {
        for args in [
            vec!["secretfs", "up", "--file", "/x", "--size", "2X"],
            vec!["secretfs", "up", "--disk", "/dev/x", "--name", "a/b"],
            vec!["secretfs", "up", "--disk", "/d", "--wrapped-key", "s3://"],
            vec![
                "secretfs",
                "up",
                "--disk",
                "/d",
                "--encryption-context",
                "nokv",
            ],
            vec!["secretfs", "up", "--disk", "/d", "--timeout", "soon"],
            vec!["secretfs", "up", "--disk", "/d", "--file", "/f"],
            vec!["secretfs", "up", "--size", "1G"],
            vec![
                "secretfs",
                "up",
                "--wrapped-key",
                "k",
                "--passphrase-file",
                "p",
            ],
            vec!["secretfs", "seal", "--to", "/x"],
        ] {
            let e = Cli::try_parse_from(&args).expect_err(&format!("{args:?}"));
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn up_parses_the_contract() {
        let cli = Cli::try_parse_from([
            "secretfs",
            "up",
            "--wrapped-key",
            "s3://bkt/k",
            "--encryption-context",
            "a=b",
            "--encryption-context",
            "c=d",
            "--file",
            "/var/secretfs.img",
            "--size",
            "2G",
            "--pbkdf",
            "pbkdf2",
            "--timeout",
            "30s",
        ])
        .unwrap();
        let Command::Up(up) = cli.command else {
            panic!("not up")
        };
        assert_eq!(up.size, Some(2 << 30));
        assert_eq!(up.aws.encryption_context.len(), 2);
        assert_eq!(up.pbkdf, Some(PbkdfChoice::Pbkdf2));
        assert_eq!(up.aws.timeout, Some(Duration::from_secs(30)));
    }
}
