//! The subcommands: observe → plan → (key) → execute, with rollback.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::json;
use tracing::{error, info, warn};

use crate::cli::{CheckKeyArgs, Cli, Command, DownArgs, PbkdfChoice, SealArgs, StatusArgs, UpArgs};
use crate::cmd::{self, Tool};
use crate::config::{self, AwsOptions, KeySpec, Target, UpConfig};
use crate::device;
use crate::error::{refused, usage, Failure};
use crate::fault;
use crate::fs;
use crate::keys::aws::{self, KmsWrappedKey};
use crate::keys::{KeyOrigin, KeySource, Passphrase, PassphraseFile, Prompt, HIGH_ENTROPY_MIN};
use crate::luks::{self, FormatOptions, Kdf};
use crate::names;
use crate::plan::{self, Plan, PlanInput, Refusal, Step, Todo};
use crate::probe::{self, DevNo, Mapping, Observed, Signature, TargetState};

/// Process-wide hardening and logging; call first thing in `main`.
pub fn init(cli: &Cli) {
    // No core dumps and no ptrace by other users' processes: the
    // passphrase must never reach a core file.
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    // The SDK's own warnings (one per failed IMDS or region lookup) repeat
    // what the retry loop reports once per attempt: keep them for -vv.
    let sdk = if cli.verbose > 1 { "debug" } else { "error" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SECRETFS_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},aws_config={sdk},aws_runtime={sdk},aws_smithy_runtime={sdk},\
             aws_smithy_http_client={sdk},aws_sdk_kms={sdk},aws_sdk_s3={sdk},hyper=warn,rustls=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(nix::unistd::isatty(std::io::stderr()).unwrap_or(false))
        .try_init();
    luks::set_up_logging();
}

/// Whether the command asked for JSON on stdout.
pub fn wants_json(cli: &Cli) -> bool {
    match &cli.command {
        Command::Up(a) => a.json,
        Command::Down(a) => a.json,
        Command::Status(a) => a.json,
        Command::Seal(a) => a.json,
        Command::CheckKey(a) => a.json,
    }
}

/// Runs the parsed command.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Up(a) => up(a),
        Command::Down(a) => down(a),
        Command::Status(a) => status(a),
        Command::Seal(a) => seal(a),
        Command::CheckKey(a) => check_key(a),
    }
}

fn print_json(v: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v).context("writing JSON")?;
    writeln!(out).context("writing JSON")
}

/// The key source named by the settings.
fn key_source(spec: &KeySpec, aws: &AwsOptions) -> Box<dyn KeySource> {
    match spec {
        KeySpec::Wrapped(l) => Box::new(KmsWrappedKey {
            location: l.clone(),
            opts: aws.clone(),
        }),
        KeySpec::PassphraseFile(p) => Box::new(PassphraseFile(p.clone())),
        KeySpec::Prompt => Box::new(Prompt),
    }
}

fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return usage(format!("{what} needs root: run it with sudo"));
    }
    Ok(())
}

fn load_config(args: &UpArgs) -> Result<UpConfig> {
    let file = match &args.config {
        Some(p) => Some(config::read_file(p)?),
        None if Path::new(names::DEFAULT_CONFIG).exists() => {
            info!("reading {}", names::DEFAULT_CONFIG);
            Some(config::read_file(Path::new(names::DEFAULT_CONFIG))?)
        }
        None => None,
    };
    config::resolve_up(args, file)
}

/// Checks that device-mapper and dm-crypt can be used, loading dm-crypt if
/// the kernel has not yet.
fn ensure_dm_crypt(obs: &Observed) -> Result<()> {
    if let Mapping::Unavailable { reason } = &obs.mapping {
        anyhow::bail!("device-mapper is not available: {reason}");
    }
    let has_crypt = || {
        devicemapper::DM::new()
            .and_then(|dm| dm.list_versions())
            .map(|v| v.iter().any(|(n, ..)| n == "crypt"))
            .unwrap_or(false)
    };
    if has_crypt() {
        return Ok(());
    }
    if let Err(e) = cmd::run(Tool::Modprobe, &["dm-crypt".as_ref()], &[]) {
        warn!("{e:#}");
    }
    if has_crypt() {
        return Ok(());
    }
    anyhow::bail!("the kernel has no dm-crypt target: load it with `modprobe dm-crypt` (Debian: linux-image; Amazon Linux: kernel modules)")
}

#[derive(Serialize)]
struct StepReport {
    step: Step,
    result: &'static str,
}

#[derive(Serialize)]
struct UpReport {
    command: &'static str,
    ok: bool,
    outcome: &'static str,
    name: String,
    mapper: PathBuf,
    device: Option<PathBuf>,
    file: Option<PathBuf>,
    mount: PathBuf,
    first_format: bool,
    steps: Vec<StepReport>,
}

/// Undo actions for partial work, run in reverse on drop unless committed.
/// Stops at the first undo that fails: nothing beneath a still-mounted
/// filesystem is torn down.
struct Rollback {
    undo: Vec<(String, Undo)>,
}

type Undo = Box<dyn FnOnce() -> Result<()>>;

impl Rollback {
    fn new() -> Self {
        Rollback { undo: Vec::new() }
    }
    fn push(&mut self, what: impl Into<String>, f: impl FnOnce() -> Result<()> + 'static) {
        self.undo.push((what.into(), Box::new(f)));
    }
    fn commit(mut self) {
        self.undo.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some((what, f)) = self.undo.pop() {
            match f() {
                Ok(()) => info!("rolled back: {what}"),
                Err(e) => {
                    error!("rolling back ({what}) failed: {e:#}; leaving the rest in place");
                    break;
                }
            }
        }
    }
}

fn kdf_for(choice: PbkdfChoice, origin: KeyOrigin, pass_len: usize) -> Kdf {
    match choice {
        PbkdfChoice::Pbkdf2 => Kdf::Pbkdf2,
        PbkdfChoice::Argon2id => Kdf::Argon2id,
        PbkdfChoice::Auto if origin == KeyOrigin::Kms && pass_len >= HIGH_ENTROPY_MIN => {
            Kdf::Pbkdf2
        }
        PbkdfChoice::Auto => Kdf::Argon2id,
    }
}

fn print_plan(cfg: &UpConfig, obs: &Observed, plan: &Result<Plan, Refusal>) -> Result<()> {
    if cfg.json {
        let v = match plan {
            Ok(p) => {
                json!({"command": "up", "dry_run": true, "ok": true, "plan": p, "observed": obs})
            }
            Err(r) => {
                json!({"command": "up", "dry_run": true, "ok": false, "refused": r.to_string(), "observed": obs})
            }
        };
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    let target = cfg.target.path().display();
    match plan {
        Ok(p) => {
            writeln!(
                out,
                "plan for {target} → /dev/mapper/{} → {}:",
                cfg.name,
                cfg.mount.display()
            )?;
            for s in &p.steps {
                let t = match s.todo {
                    Todo::AlreadyDone => "already done",
                    Todo::WillDo => "will do",
                    Todo::IfNeeded => "if needed",
                };
                writeln!(out, "  {:<13} {}", t, s.step)?;
            }
            for n in &p.notes {
                writeln!(out, "  note: {n}")?;
            }
            if p.needs_key() {
                writeln!(
                    out,
                    "  key: {} (not fetched in a dry run)",
                    key_source(&cfg.key, &cfg.aws).describe()
                )?;
            }
        }
        Err(r) => writeln!(out, "would refuse: {r}")?,
    }
    Ok(())
}

/// Environment variable that replaces the instance-store model string
/// `--disk auto` looks for. A test seam: emulated NVMe controllers cannot
/// carry Amazon's model name.
pub const MODEL_OVERRIDE_ENV: &str = "SECRETFS_INSTANCE_STORE_MODEL";

/// Resolves `--disk auto` to an instance-store NVMe disk: the one that
/// already holds a secretfs volume, else the first blank one, else the
/// first (which the planner then refuses with the reason).
fn resolve_auto_disk(cfg: &mut UpConfig) -> Result<()> {
    let Target::Disk(d) = &cfg.target else {
        return Ok(());
    };
    if d != Path::new("auto") {
        return Ok(());
    }
    let model = std::env::var(MODEL_OVERRIDE_ENV)
        .unwrap_or_else(|_| probe::INSTANCE_STORE_MODEL.to_string());
    let disks = probe::instance_store_disks(Path::new("/"), &model);
    if disks.is_empty() {
        return usage(format!(
            "--disk auto found no instance-store NVMe disk (model '{model}'): this instance type may have none, \
             or exposes it as /dev/xvdb-style: name it with --disk"
        ));
    }
    let sigs: Vec<Signature> = disks
        .iter()
        .map(|d| probe::signature(d))
        .collect::<Result<_>>()?;
    let pick = sigs
        .iter()
        .position(Signature::is_ours)
        .or_else(|| sigs.iter().position(|s| *s == Signature::Blank))
        .unwrap_or(0);
    info!(
        "--disk auto: {} instance-store disk(s); using {} ({})",
        disks.len(),
        disks[pick].display(),
        sigs[pick].describe()
    );
    cfg.target = Target::Disk(disks[pick].clone());
    Ok(())
}

/// `secretfs up`.
pub fn up(args: &UpArgs) -> Result<()> {
    let mut cfg = load_config(args)?;
    if !cfg.dry_run {
        // Before anything is probed: without root, blkid and device-mapper
        // would fail with less helpful errors.
        require_root("secretfs up")?;
    }
    resolve_auto_disk(&mut cfg)?;
    let obs = probe::observe(Path::new("/"), &cfg)?;
    let input = PlanInput {
        target: cfg.target.clone(),
        name: cfg.name.clone(),
        mount: cfg.mount.clone(),
        force: cfg.force,
        wipe: cfg.wipe,
    };
    let planned = plan::plan(&input, &obs);
    if cfg.dry_run {
        print_plan(&cfg, &obs, &planned)?;
        return match planned {
            Ok(_) => Ok(()),
            Err(Refusal::Refused(m)) => refused(m),
            Err(Refusal::Usage(m)) => usage(m),
        };
    }
    let plan = match planned {
        Ok(p) => p,
        Err(Refusal::Refused(m)) => return refused(m),
        Err(Refusal::Usage(m)) => return usage(m),
    };
    for n in &plan.notes {
        warn!("{n}");
    }
    let mapper = names::mapper_path(&cfg.name);
    let mut report = UpReport {
        command: "up",
        ok: true,
        outcome: "already_up",
        name: cfg.name.clone(),
        mapper: mapper.clone(),
        device: match &obs.target {
            TargetState::Block { dev, .. } => Some(dev.path.clone()),
            TargetState::File {
                loop_dev: Some(l), ..
            } => Some(l.dev.path.clone()),
            _ => None,
        },
        file: match &cfg.target {
            Target::File { path, .. } => Some(path.clone()),
            Target::Disk(_) => None,
        },
        mount: cfg.mount.clone(),
        first_format: plan.first_format,
        steps: Vec::new(),
    };
    if plan.is_noop() {
        info!(
            "already up: /dev/mapper/{} is open on {} and mounted at {}; no action taken",
            cfg.name,
            cfg.target.path().display(),
            cfg.mount.display()
        );
        report.steps = plan
            .steps
            .iter()
            .map(|s| StepReport {
                step: s.step,
                result: "already_done",
            })
            .collect();
        return if cfg.json {
            print_json(&report)
        } else {
            Ok(())
        };
    }

    // Preflight: nothing has been written yet, and nothing will be if any
    // of these fail.
    cmd::verify_executables(&[Tool::Blkid, Tool::MkfsExt4])?;
    if plan.needs_key() {
        ensure_dm_crypt(&obs)?;
    }
    let source = key_source(&cfg.key, &cfg.aws);
    let mut pass: Option<Passphrase> = if plan.needs_key() {
        info!(
            "{}; fetching the key from {}",
            describe_state(&obs, &cfg),
            source.describe()
        );
        Some(source.fetch(plan.first_format)?)
    } else {
        None
    };
    fault::point("key");

    let mut rb = Rollback::new();
    let mut backing: Option<PathBuf> = report.device.clone();
    let mut attached: Option<device::AttachedLoop> = None;
    for s in &plan.steps {
        if s.todo == Todo::AlreadyDone {
            report.steps.push(StepReport {
                step: s.step,
                result: "already_done",
            });
            continue;
        }
        let result =
            match s.step {
                Step::CreateFile => {
                    let Target::File {
                        path,
                        size: Some(size),
                    } = &cfg.target
                    else {
                        unreachable!("planned for files with a size")
                    };
                    device::create_sparse(path, *size)?;
                    info!(
                        "created {} ({} MiB, sparse, mode 0600)",
                        path.display(),
                        device::round_size(*size) >> 20
                    );
                    "done"
                }
                Step::AttachLoop => {
                    let l = device::attach(cfg.target.path())?;
                    info!(
                        "attached {} to {}",
                        cfg.target.path().display(),
                        l.path.display()
                    );
                    backing = Some(l.path.clone());
                    report.device = Some(l.path.clone());
                    attached = Some(l);
                    "done"
                }
                Step::Format => {
                    let dev = backing.clone().context("no backing device to format")?;
                    // Look again right before writing: refuse if anything
                    // appeared since the plan was made.
                    let now = probe::signature(&dev)?;
                    if now != Signature::Blank && !plan.forced {
                        return refused(format!(
                            "{} now holds {}; not formatting",
                            dev.display(),
                            now.describe()
                        ));
                    }
                    let p = pass.as_ref().context("no key")?;
                    let kdf = kdf_for(cfg.pbkdf, source.origin(), p.len());
                    let size = std::fs::metadata(&dev)
                        .ok()
                        .filter(|m| m.len() > 0)
                        .map(|m| m.len())
                        .unwrap_or_else(|| block_size(&dev));
                    let lbs = match &obs.target {
                        TargetState::Block { logical_block, .. } => *logical_block,
                        _ => 512,
                    };
                    let opts = FormatOptions {
                        label: cfg.name.clone(),
                        sector_size: device::sector_size_for(size, lbs),
                        kdf,
                        no_workqueues: luks::kernel_has_workqueue_flags(),
                        discard: cfg.discard,
                    };
                    if plan.forced {
                        warn!(
                            "--force: destroying {} on {}",
                            obs.signature.describe(),
                            dev.display()
                        );
                    }
                    luks::format(&dev, p, &opts)?;
                    info!(
                    "formatted {} as LUKS2 (aes-xts-plain64, 512-bit key, {}-byte sectors, {:?}{})",
                    dev.display(),
                    opts.sector_size,
                    kdf,
                    if opts.no_workqueues { ", no_read/no_write_workqueue" } else { "" }
                );
                    "done"
                }
                Step::Open => {
                    let dev = backing.clone().context("no backing device to open")?;
                    let p = pass.take().context("no key")?;
                    luks::open(&dev, &cfg.name, &p, cfg.discard, &source.describe())?;
                    // The passphrase is no longer needed: zeroed and unlocked here.
                    drop(p);
                    info!("opened {} as {}", dev.display(), mapper.display());
                    let name = cfg.name.clone();
                    rb.push(format!("close {}", mapper.display()), move || {
                        luks::close(&name)
                    });
                    "done"
                }
                Step::Wipe => {
                    info!(
                        "wiping {} with zeros (--wipe); this takes time proportional to its size",
                        mapper.display()
                    );
                    fs::wipe(&mapper)?;
                    "done"
                }
                Step::MakeFilesystem => match probe::signature(&mapper)? {
                    Signature::Blank => {
                        fs::mkfs_ext4(&mapper)?;
                        info!("made ext4 on {}", mapper.display());
                        "done"
                    }
                    Signature::Content { fstype } if fstype == "ext4" => {
                        info!("{} already holds ext4; no action taken", mapper.display());
                        "already_done"
                    }
                    other => {
                        return refused(format!(
                            "{} holds {}, not ext4: secretfs will not replace it",
                            mapper.display(),
                            other.describe()
                        ))
                    }
                },
                Step::CreateMountPoint => {
                    std::fs::create_dir_all(&cfg.mount)
                        .with_context(|| format!("creating {}", cfg.mount.display()))?;
                    "done"
                }
                Step::Mount => {
                    fs::mount(&mapper, &cfg.mount, &cfg.mount_options)?;
                    info!("mounted {} at {}", mapper.display(), cfg.mount.display());
                    let dir = cfg.mount.clone();
                    rb.push(format!("unmount {}", dir.display()), move || {
                        fs::umount(&dir)
                    });
                    "done"
                }
            };
        report.steps.push(StepReport {
            step: s.step,
            result,
        });
        fault::point(s.step.name());
    }
    drop(pass);
    // The mapping now holds the loop device; our handle can go.
    drop(attached);
    rb.commit();
    report.outcome = "up";
    info!(
        "up: {} ({}) mounted at {}",
        mapper.display(),
        report
            .device
            .as_deref()
            .unwrap_or(cfg.target.path())
            .display(),
        cfg.mount.display()
    );
    if cfg.json {
        print_json(&report)?;
    }
    Ok(())
}

fn block_size(dev: &Path) -> u64 {
    use std::io::{Seek, SeekFrom};
    std::fs::File::open(dev)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .unwrap_or(0)
}

fn describe_state(obs: &Observed, cfg: &UpConfig) -> String {
    let t = cfg.target.path().display();
    match (&obs.target, &obs.signature) {
        (TargetState::Missing { .. }, _) => {
            format!("{t} does not exist yet; creating a new volume")
        }
        (_, s) if s.is_ours() => format!("LUKS2 header found on {t} (ours); opening"),
        (_, Signature::Blank) => format!("{t} is blank; creating a new volume"),
        (_, s) => format!(
            "{t} holds {} and --force was given; formatting",
            s.describe()
        ),
    }
}

/// Path of the block device with number `d`, from sysfs.
fn dev_path(d: DevNo) -> Option<PathBuf> {
    let target = std::fs::canonicalize(format!("/sys/dev/block/{d}")).ok()?;
    Some(PathBuf::from("/dev").join(target.file_name()?))
}

fn loop_backing(d: DevNo) -> Option<(PathBuf, bool)> {
    let sys = PathBuf::from(format!("/sys/dev/block/{d}/loop"));
    let file = std::fs::read_to_string(sys.join("backing_file")).ok()?;
    let auto = std::fs::read_to_string(sys.join("autoclear")).is_ok_and(|s| s.trim() == "1");
    Some((PathBuf::from(file.trim()), auto))
}

/// `secretfs down`.
pub fn down(args: &DownArgs) -> Result<()> {
    let name = config::volume_name(&args.name, &args.config)?;
    let mapper = names::mapper_path(&name);
    let mut unmounted = Vec::new();
    let mut detached = Vec::new();
    let (devno, on) = match probe::mapping(&name) {
        Mapping::Absent | Mapping::Unavailable { .. } => {
            info!("{} is not open; nothing to do", mapper.display());
            if args.json {
                print_json(
                    &json!({"command": "down", "ok": true, "outcome": "already_down", "name": args.name}),
                )?;
            }
            return Ok(());
        }
        m @ Mapping::Open { .. } if !m.is_luks2() => {
            return refused(format!(
                "{} is not a LUKS2 volume; secretfs down leaves it alone",
                mapper.display()
            ))
        }
        Mapping::Open { devno, on, .. } => (devno, on),
    };
    for d in &on {
        if let Some(p) = dev_path(*d) {
            let sig = probe::signature(&p)?;
            if !sig.is_ours() {
                return refused(format!(
                    "{} sits on {}, which holds {}; not a secretfs volume",
                    mapper.display(),
                    p.display(),
                    sig.describe()
                ));
            }
        }
    }
    require_root("secretfs down")?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut points = probe::mounts_of(devno, &probe::parse_mountinfo(&mountinfo));
    if let Some(m) = &args.mount {
        let canon = std::fs::canonicalize(m).unwrap_or_else(|_| m.clone());
        if !points.contains(&canon) {
            info!(
                "{} is not mounted from {}; not touching it",
                m.display(),
                mapper.display()
            );
        }
    }
    points.reverse();
    for p in points {
        fs::umount(&p)?;
        info!("unmounted {}", p.display());
        unmounted.push(p);
    }
    luks::close(&name)?;
    info!("closed {}", mapper.display());
    for d in on {
        if let Some((file, autoclear)) = loop_backing(d) {
            let Some(path) = dev_path(d) else { continue };
            if autoclear {
                // Autoclear detaches on last close; make sure of it.
                if loop_backing(d).is_some() {
                    if let Err(e) = device::detach(&path) {
                        if loop_backing(d).is_some() {
                            return Err(e);
                        }
                    }
                }
                info!("detached {} ({})", path.display(), file.display());
                detached.push(path);
            } else {
                info!(
                    "{} ({}) was not attached by secretfs; leaving it attached",
                    path.display(),
                    file.display()
                );
            }
        }
    }
    if args.json {
        print_json(
            &json!({"command": "down", "ok": true, "outcome": "down", "name": args.name,
            "unmounted": unmounted, "closed": mapper, "detached": detached}),
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct MountReport {
    path: PathBuf,
    fstype: String,
    size_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

#[derive(Serialize)]
struct StatusReport {
    command: &'static str,
    ok: bool,
    name: String,
    mapper: PathBuf,
    open: bool,
    device: Option<PathBuf>,
    loop_file: Option<PathBuf>,
    loop_attached_by_secretfs: Option<bool>,
    luks: Option<luks::LuksInfo>,
    label: Option<String>,
    subsystem: Option<String>,
    mounts: Vec<MountReport>,
    note: Option<String>,
}

/// `secretfs status`.
pub fn status(args: &StatusArgs) -> Result<()> {
    let name = config::volume_name(&args.name, &args.config)?;
    let mapper = names::mapper_path(&name);
    let mut r = StatusReport {
        command: "status",
        ok: true,
        name: name.clone(),
        mapper: mapper.clone(),
        open: false,
        device: None,
        loop_file: None,
        loop_attached_by_secretfs: None,
        luks: None,
        label: None,
        subsystem: None,
        mounts: Vec::new(),
        note: None,
    };
    match probe::mapping(&name) {
        Mapping::Unavailable { reason } => {
            r.note = Some(format!("device-mapper unavailable: {reason}"))
        }
        Mapping::Absent => r.note = Some(format!("{} is not open", mapper.display())),
        Mapping::Open { devno, on, .. } => {
            r.open = true;
            if let Some(d) = on.first() {
                r.device = dev_path(*d);
                if let Some((f, auto)) = loop_backing(*d) {
                    r.loop_file = Some(f);
                    r.loop_attached_by_secretfs = Some(auto);
                }
                if let Some(dev) = &r.device {
                    r.luks = luks::inspect(dev)?;
                    if let Signature::Luks {
                        label, subsystem, ..
                    } = probe::signature(dev)?
                    {
                        r.label = label;
                        r.subsystem = subsystem;
                    }
                }
            }
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .context("reading /proc/self/mountinfo")?;
            for m in probe::parse_mountinfo(&mountinfo)
                .into_iter()
                .filter(|m| m.devno == devno)
            {
                let (size, free, avail, frag) = nix::sys::statvfs::statvfs(&m.mount_point)
                    .map(|s| {
                        (
                            s.blocks(),
                            s.blocks_free(),
                            s.blocks_available(),
                            s.fragment_size(),
                        )
                    })
                    .unwrap_or_default();
                r.mounts.push(MountReport {
                    fstype: m.fstype.clone(),
                    size_bytes: size * frag,
                    used_bytes: (size - free) * frag,
                    available_bytes: avail * frag,
                    path: m.mount_point,
                });
            }
        }
    }
    if args.json {
        return print_json(&r);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "volume:  {} ({})",
        r.name,
        if r.open { "open" } else { "closed" }
    )?;
    if let Some(n) = &r.note {
        writeln!(out, "note:    {n}")?;
    }
    if let Some(d) = &r.device {
        writeln!(out, "device:  {}", d.display())?;
    }
    if let Some(f) = &r.loop_file {
        writeln!(
            out,
            "file:    {} (loop attached by secretfs: {})",
            f.display(),
            r.loop_attached_by_secretfs.unwrap_or(false)
        )?;
    }
    if let Some(l) = &r.luks {
        writeln!(
            out,
            "luks:    LUKS{} {}-{} {}-bit key, {}-byte sectors, pbkdf {}, label {}, subsystem {}",
            l.version,
            l.cipher,
            l.cipher_mode,
            l.key_bits,
            l.sector_size,
            l.pbkdf.as_deref().unwrap_or("?"),
            r.label.as_deref().unwrap_or("-"),
            r.subsystem.as_deref().unwrap_or("-")
        )?;
        if !l.persistent_flags.is_empty() {
            writeln!(out, "flags:   {}", l.persistent_flags.join(", "))?;
        }
    }
    for m in &r.mounts {
        writeln!(
            out,
            "mount:   {} ({}, {} MiB used of {} MiB, {} MiB available)",
            m.path.display(),
            m.fstype,
            m.used_bytes >> 20,
            m.size_bytes >> 20,
            m.available_bytes >> 20
        )?;
    }
    Ok(())
}

/// `secretfs seal`.
pub fn seal(args: &SealArgs) -> Result<()> {
    let opts = AwsOptions::from_args(&args.aws)?;
    let pass = match &args.passphrase_file {
        Some(p) => PassphraseFile(p.clone()).fetch(false)?,
        None => Passphrase::generate(crate::keys::GENERATED_LEN)?,
    };
    if pass.len() < HIGH_ENTROPY_MIN {
        warn!("the passphrase is {} bytes; `up --pbkdf auto` will protect it with argon2id, not PBKDF2", pass.len());
    }
    let sealed = aws::block_on(aws::seal(&pass, &args.kms_key, &args.to, &opts, args.force))?;
    drop(pass);
    if args.json {
        print_json(&json!({"command": "seal", "ok": true, "sealed": sealed}))?;
    } else {
        eprintln!(
            "sealed a {}-byte passphrase under {} into {} ({} bytes)",
            sealed.passphrase_bytes, sealed.key_id, sealed.to, sealed.blob_bytes
        );
    }
    Ok(())
}

/// `secretfs check-key`.
pub fn check_key(args: &CheckKeyArgs) -> Result<()> {
    let opts = AwsOptions::from_args(&args.aws)?;
    let src = KmsWrappedKey {
        location: args.wrapped_key.clone(),
        opts,
    };
    let p = src.fetch(false)?;
    let n = p.len();
    drop(p);
    if args.json {
        print_json(
            &json!({"command": "check-key", "ok": true, "source": args.wrapped_key.to_string(), "bytes": n}),
        )?;
    } else {
        eprintln!("ok: {} decrypts to a {n}-byte passphrase", args.wrapped_key);
    }
    Ok(())
}

/// Prints an error as one JSON object (for `--json`).
pub fn print_error_json(cli: &Cli, err: &anyhow::Error, code: u8) {
    let command = match &cli.command {
        Command::Up(_) => "up",
        Command::Down(_) => "down",
        Command::Status(_) => "status",
        Command::Seal(_) => "seal",
        Command::CheckKey(_) => "check-key",
    };
    let kind = err
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map(|f| match f {
            Failure::Usage(_) => "usage",
            Failure::Refused(_) => "refused",
            Failure::KeyUnavailable(_) => "key_unavailable",
        });
    let _ = print_json(
        &json!({"command": command, "ok": false, "error": format!("{err:#}"), "kind": kind.unwrap_or("failed"), "exit_code": code}),
    );
}
