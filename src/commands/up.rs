//! `secretfs up`: make or re-open the volume and mount it.
//!
//! Settings → (`--disk auto`) → lock → observe → plan → preflight → key →
//! execute. The lock is held from the observation to the end, so a second
//! `up` waits and then finds the volume up.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use super::{print_json, require_root};
use crate::cli::UpArgs;
use crate::cmd::{self, Tool};
use crate::config;
use crate::error::Failure;
use crate::exec::{self, Key, Outcome, StepReport};
use crate::fault;
use crate::keys::aws::KmsWrappedKey;
use crate::keys::data_key::DataKeys;
use crate::keys::ephemeral::EphemeralKeys;
use crate::keys::{KeyOrigin, KeySource, Passphrase, PassphraseFile, Prompt};
use crate::lock;
use crate::luks;
use crate::names;
use crate::observe::{self, Mapping, Observed, SetObserved};
use crate::plan::{self, Class, Plan, PlanInput, Refusal, Step, Todo};
use crate::settings::{KeySpec, NoDisks, Target, Up, Use};
use crate::signals;

/// Where the settings say the key comes from.
enum Keying {
    /// One passphrase, fetched before the plan runs.
    Source(Box<dyn KeySource>),
    /// Each volume's data key, made or opened as the plan reaches it.
    DataKeys(Box<DataKeys>),
    /// Each volume's random key, made as the plan formats it.
    Ephemeral(EphemeralKeys),
}

impl Keying {
    fn of(s: &Up) -> Keying {
        match &s.key {
            KeySpec::Wrapped(l) => Keying::Source(Box::new(KmsWrappedKey {
                location: l.clone(),
                opts: s.aws.clone(),
            })),
            KeySpec::PassphraseFile(p) => Keying::Source(Box::new(PassphraseFile(p.clone()))),
            KeySpec::Prompt => Keying::Source(Box::new(Prompt)),
            KeySpec::Ephemeral => Keying::Ephemeral(EphemeralKeys::new()),
            KeySpec::DataKey {
                kms_key,
                bind_instance,
            } => Keying::DataKeys(Box::new(DataKeys::new(
                kms_key.clone(),
                *bind_instance,
                s.aws.clone(),
            ))),
        }
    }

    fn describe(&self) -> String {
        match self {
            Keying::Source(k) => k.describe(),
            Keying::DataKeys(k) => k.describe(),
            Keying::Ephemeral(k) => k.describe(),
        }
    }
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
    /// The disks of a set, in member order.
    members: Option<Vec<PathBuf>>,
    mount: PathBuf,
    first_format: bool,
    /// Seconds spent getting the key before the steps ran (None: no key
    /// was needed, or each volume's data key is got in its step).
    key_seconds: Option<f64>,
    steps: Vec<StepReport>,
}

/// What `up` observed: one target, or the disks of a set.
#[derive(Serialize)]
#[serde(untagged)]
enum Seen {
    One(Box<Observed>),
    Set(SetObserved),
}

impl Seen {
    /// The mapping NAME (the volume, or the set's stripe).
    fn mapping(&self) -> &Mapping {
        match self {
            Seen::One(o) => &o.mapping,
            Seen::Set(o) => &o.stripe,
        }
    }
}

/// `secretfs up`.
pub fn run(args: &UpArgs) -> Result<()> {
    bring_up(config::up(args)?)
}

/// Brings up the volume (or the swap space of `secretfs swap`) `s`
/// describes; with `--each-disk`, a volume per disk.
pub fn bring_up(s: Up) -> Result<()> {
    bring_up_keyed(s, &mut None)
}

/// A passphrase fetched once for the volumes of one run (`--each-disk`),
/// with what `Key::Shared` says of it.
type Fetched = Option<(Passphrase, KeyOrigin, String)>;

/// [`bring_up`], taking a passphrase from `fetched` when an earlier
/// volume of the run fetched it (and leaving it there when it fetches).
fn bring_up_keyed(mut s: Up, fetched: &mut Fetched) -> Result<()> {
    let command = match s.inside {
        Use::Filesystem { .. } => "up",
        Use::Swap { .. } => "swap",
    };
    if !s.dry_run {
        // Before anything is probed: without root, the devices and
        // device-mapper cannot be read.
        require_root(&format!("secretfs {command}"))?;
        signals::install();
    }
    let root = Path::new("/");
    let Some(auto) = resolve_auto(root, &mut s)? else {
        return Ok(());
    };
    if s.each_disk {
        return each_disk(root, s, fetched);
    }
    let _locks = if s.dry_run {
        None
    } else {
        let volume = lock::acquire(&s.name, s.aws.timeout)?;
        let devices = lock::acquire_devices(&s.target.paths(), s.aws.timeout)?;
        Some((volume, devices))
    };
    let (seen, planned) = match s.target.clone() {
        Target::Disks(disks) => {
            let o = observe::observe_set(root, &disks, &s.name, &s.mount)?;
            match plan::lone_volume(&o).filter(|_| auto) {
                None => {
                    let input = PlanInput::from_settings(&s, luks::kernel_has_workqueue_flags());
                    let p = plan::plan_set(&input, &o, &new_set_id()?);
                    (Seen::Set(o), p)
                }
                Some(i) => {
                    warn!(
                        "{} holds a single-disk secretfs volume: using it as it is; the other {} disk(s) stay unused \
                         until the volume is made anew (a stop/start blanks them all)",
                        disks[i].display(),
                        disks.len() - 1
                    );
                    s.target = Target::Disk(disks[i].clone());
                    observe_one(root, &s)?
                }
            }
        }
        _ => observe_one(root, &s)?,
    };
    if s.dry_run {
        print_plan(&s, &seen, &planned)?;
        return planned.map(|_| ()).map_err(Refusal::into_error);
    }
    let plan = planned.map_err(Refusal::into_error)?;
    for n in &plan.notes {
        warn!("{n}");
    }
    let mut report = UpReport {
        command,
        ok: true,
        outcome: "already_up",
        name: s.name.clone(),
        mapper: names::mapper_path(&s.name),
        device: match &seen {
            Seen::One(o) => o.device.block().map(|b| b.path.clone()),
            Seen::Set(_) => None,
        },
        file: match &s.target {
            Target::File { path, .. } => Some(path.clone()),
            _ => None,
        },
        members: members_in_order(&plan),
        mount: s.mount.clone(),
        first_format: plan.first_format,
        key_seconds: None,
        steps: Vec::new(),
    };
    if plan.is_noop() {
        info!(
            "already up: {} is open on {} and {}; no action taken",
            report.mapper.display(),
            shown_target(&s.target),
            where_used(&s)
        );
        report.steps = plan
            .steps
            .iter()
            .map(|p| StepReport {
                step: p.step.name(),
                result: Outcome::AlreadyDone,
                seconds: 0.0,
                members: Vec::new(),
            })
            .collect();
        return if s.json { print_json(&report) } else { Ok(()) };
    }

    // Preflight: nothing has been written yet, and nothing will be if any
    // of these fail.
    let mut tools = vec![Tool::Wipefs];
    tools.extend(match s.inside {
        Use::Filesystem { .. } => plan.may_make().map(Tool::Mkfs),
        Use::Swap { .. } => Some(Tool::Mkswap),
    });
    cmd::verify_executables(&tools)?;
    if plan.needs_key() {
        ensure_dm_crypt(seen.mapping())?;
    }
    let per_volume = |what: String, key: Key| {
        info!("{}; the key: {what}", describe_state(&s, &seen, &plan));
        Some(key)
    };
    let key = if plan.needs_key() {
        match Keying::of(&s) {
            Keying::Source(source) => {
                if fetched.is_none() {
                    info!(
                        "{}; fetching the key from {}",
                        describe_state(&s, &seen, &plan),
                        source.describe()
                    );
                    let started = std::time::Instant::now();
                    let pass = source.fetch(plan.first_format)?;
                    report.key_seconds = Some(exec::seconds_since(started));
                    *fetched = Some((pass, source.origin(), source.describe()));
                }
                let (pass, origin, from) = fetched.as_ref().expect("fetched above");
                Some(Key::Shared {
                    pass: Passphrase::from_slice(pass.expose()),
                    origin: *origin,
                    from: from.clone(),
                })
            }
            // Keys made or opened per volume, in the steps.
            Keying::DataKeys(keys) => per_volume(keys.describe(), Key::DataKeys(*keys)),
            Keying::Ephemeral(keys) => per_volume(keys.describe(), Key::Ephemeral(keys)),
        }
    } else {
        None
    };
    fault::point("key");
    report.steps = exec::run(&plan, key)?;
    report.outcome = "up";
    if report.device.is_none() && report.members.is_none() {
        report.device = observe::sys::loop_device_of_file(root, s.target.path());
    }
    info!(
        "up: {} ({}) {}",
        report.mapper.display(),
        match &report.device {
            Some(d) => d.display().to_string(),
            None => shown_target(&s.target),
        },
        where_used(&s)
    );
    if s.json {
        print_json(&report)?;
    }
    Ok(())
}

/// `--each-disk`: a volume per disk of `s`, each brought up as a single
/// volume, `NAME-diskN` mounted at `MOUNT/N`, N from its token
/// ([`plan::each_disk`]). Every disk is examined before any is touched;
/// the key is fetched once for all of them.
fn each_disk(root: &Path, s: Up, fetched: &mut Fetched) -> Result<()> {
    // One run at a time hands out indexes.
    let _lock = match s.dry_run {
        true => None,
        false => Some(lock::acquire(&s.name, s.aws.timeout)?),
    };
    let found = s
        .target
        .paths()
        .into_iter()
        .map(|d| {
            let c = observe::content::examine(&names::under(root, d))?;
            Ok((d.to_path_buf(), plan::each_disk::found(&c)))
        })
        .collect::<Result<Vec<_>>>()?;
    let disks = plan::each_disk::assign(&found).map_err(Refusal::into_error)?;
    for (dev, n) in disks {
        let name = names::disk_volume_name(&s.name, n);
        let mount = s.mount.join(n.to_string());
        info!(
            "--each-disk: {} is disk {n}: {} at {}",
            dev.display(),
            names::mapper_path(&name).display(),
            mount.display()
        );
        let one = Up {
            target: Target::Disk(dev),
            name,
            mount,
            each_disk: false,
            disk_index: Some(n),
            ..s.clone()
        };
        bring_up_keyed(one, fetched)?;
    }
    Ok(())
}

/// Where the volume is used: its mount point, or swap.
fn where_used(s: &Up) -> String {
    match s.inside {
        Use::Filesystem { .. } => format!("mounted at {}", s.mount.display()),
        Use::Swap { priority: Some(p) } => format!("enabled as swap at priority {p}"),
        Use::Swap { priority: None } => "enabled as swap".into(),
    }
}

/// The disks of a set in member order (the order the plan opens them).
fn members_in_order(plan: &Plan) -> Option<Vec<PathBuf>> {
    let v: Vec<PathBuf> = plan
        .steps
        .iter()
        .filter_map(|p| match &p.step {
            Step::MakeFilesystem {
                devs,
                stripe: Some(_),
                ..
            } => Some(devs),
            _ => None,
        })
        .flatten()
        .map(|d| PathBuf::from(d.to_string()))
        .collect();
    (!v.is_empty()).then_some(v)
}

fn shown_target(t: &Target) -> String {
    match t {
        Target::Disks(d) => d
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        t => t.path().display().to_string(),
    }
}

/// A new set's id: 128 random bits, in hex.
fn new_set_id() -> Result<String> {
    Ok(crate::keys::random_bytes()?
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect())
}

/// Checks that device-mapper and dm-crypt can be used, loading dm-crypt if
/// the kernel has not yet.
fn ensure_dm_crypt(mapping: &Mapping) -> Result<()> {
    if let Mapping::Unavailable { reason } = mapping {
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
    anyhow::bail!("the kernel has no dm-crypt target, and `modprobe dm-crypt` did not load it (Debian: linux-image; Amazon Linux: kernel modules)")
}

fn describe_state(s: &Up, seen: &Seen, plan: &Plan) -> String {
    let t = shown_target(&s.target);
    let obs = match seen {
        Seen::Set(_) if plan.first_format => return format!("{t}: making a new set"),
        Seen::Set(_) => return format!("{t}: every member of the set found; opening"),
        Seen::One(o) => o,
    };
    match obs.device.content.as_ref().map(plan::classify) {
        None => format!("{t} does not exist yet; creating a new volume"),
        Some(Class::Ours {
            ephemeral: true, ..
        }) if plan.first_format => {
            format!("{t} holds an ephemeral volume whose key is gone; making it anew")
        }
        Some(Class::Ours { .. }) => format!("LUKS2 header found on {t} (ours); opening"),
        Some(Class::Blank) => format!("{t} is blank; creating a new volume"),
        Some(Class::HalfMade { .. }) => format!("{t} holds a half-made volume; formatting again"),
        Some(Class::Foreign(what) | Class::Damaged(what)) => {
            format!("{t} holds {what} and --force was given; formatting")
        }
    }
}

/// Resolves `--disk auto` to every instance-store NVMe disk: one is a
/// single volume, several a set. Returns whether the target came from
/// `auto` (which may keep a single-disk volume beside blank disks, see
/// `plan::lone_volume`), or None when there is nothing to do (no disk, and
/// `--no-disks ok`).
fn resolve_auto(root: &Path, s: &mut Up) -> Result<Option<bool>> {
    if s.target != Target::Auto {
        return Ok(Some(false));
    }
    // Set but empty, the override is ignored (an empty model would name
    // every NVMe disk, EBS too).
    let model = std::env::var(names::ENV_MODEL_OVERRIDE)
        .ok()
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| names::INSTANCE_STORE_MODEL.to_string());
    let mut disks = observe::sys::instance_store_disks(root, &model);
    // The disk `secretfs swap` took (it runs first) is not for volumes.
    disks.retain(|d| {
        let swap = observe::content::examine(&names::under(root, d))
            .is_ok_and(|c| matches!(plan::classify(&c), Class::Ours { swap: true, .. }));
        if swap {
            info!(
                "--disk auto: {} holds the swap space of `secretfs swap`; leaving it out",
                d.display()
            );
        }
        !swap
    });
    if disks.is_empty() {
        let msg = format!(
            "--disk auto found no instance-store NVMe disk (model '{model}'): this instance type may have none, \
             or exposes it as /dev/xvdb-style: name it with --disk"
        );
        return match s.no_disks {
            NoDisks::Error => Err(Failure::NoDisks(msg).into()),
            NoDisks::Ok => {
                info!("{msg}; --no-disks ok: nothing to do");
                Ok(None)
            }
        };
    }
    let shown: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    info!(
        "--disk auto: {} instance-store disk(s): {}",
        disks.len(),
        shown.join(", ")
    );
    s.target = match <[PathBuf; 1]>::try_from(disks) {
        Ok([one]) => Target::Disk(one),
        Err(many) => Target::Disks(many),
    };
    Ok(Some(true))
}

/// Observes and plans one target (a disk or a file).
fn observe_one(root: &Path, s: &Up) -> Result<(Seen, Result<Plan, Refusal>)> {
    let input = PlanInput::from_settings(s, luks::kernel_has_workqueue_flags());
    let o = observe::observe(root, &s.target, &s.name, &s.mount)?;
    let p = plan::plan(&input, &o);
    Ok((Seen::One(Box::new(o)), p))
}

fn print_plan(s: &Up, obs: &Seen, plan: &Result<Plan, Refusal>) -> Result<()> {
    if s.json {
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
    match plan {
        Ok(p) => {
            writeln!(
                out,
                "plan for {} → {} → {}:",
                shown_target(&s.target),
                names::mapper_path(&s.name).display(),
                s.mount.display()
            )?;
            for st in &p.steps {
                let t = match st.todo {
                    Todo::AlreadyDone => "already done",
                    Todo::WillDo => "will do",
                    Todo::IfNeeded => "if needed",
                };
                writeln!(out, "  {:<13} {:<19} {}", t, st.step.name(), st.step)?;
            }
            for n in &p.notes {
                writeln!(out, "  note: {n}")?;
            }
            if p.needs_key() {
                writeln!(
                    out,
                    "  key: {} (not fetched in a dry run)",
                    Keying::of(s).describe()
                )?;
            }
        }
        Err(r) => writeln!(out, "would refuse: {r}")?,
    }
    Ok(())
}
