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
use crate::error::usage;
use crate::exec::{self, Key, Outcome, StepReport};
use crate::fault;
use crate::keys::aws::KmsWrappedKey;
use crate::keys::{KeySource, PassphraseFile, Prompt};
use crate::lock;
use crate::luks;
use crate::names;
use crate::observe::{self, content, Mapping, Observed};
use crate::plan::{self, Class, Plan, PlanInput, Refusal, Todo};
use crate::settings::{KeySpec, Target, Up};
use crate::signals;

/// The key source named by the settings.
pub fn key_source(s: &Up) -> Box<dyn KeySource> {
    match &s.key {
        KeySpec::Wrapped(l) => Box::new(KmsWrappedKey {
            location: l.clone(),
            opts: s.aws.clone(),
        }),
        KeySpec::PassphraseFile(p) => Box::new(PassphraseFile(p.clone())),
        KeySpec::Prompt => Box::new(Prompt),
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
    mount: PathBuf,
    first_format: bool,
    steps: Vec<StepReport>,
}

/// `secretfs up`.
pub fn run(args: &UpArgs) -> Result<()> {
    let mut s = config::up(args)?;
    if !s.dry_run {
        // Before anything is probed: without root, the devices and
        // device-mapper cannot be read.
        require_root("secretfs up")?;
        signals::install();
    }
    let root = Path::new("/");
    resolve_auto_disk(root, &mut s)?;
    let _lock = if s.dry_run {
        None
    } else {
        Some(lock::acquire(&s.name, s.aws.timeout)?)
    };
    let obs = observe::observe(root, &s.target, &s.name, &s.mount)?;
    let input = PlanInput::from_settings(&s, luks::kernel_has_workqueue_flags());
    let planned = plan::plan(&input, &obs);
    if s.dry_run {
        print_plan(&s, &obs, &planned)?;
        return planned.map(|_| ()).map_err(Refusal::into_error);
    }
    let plan = planned.map_err(Refusal::into_error)?;
    for n in &plan.notes {
        warn!("{n}");
    }
    let mut report = UpReport {
        command: "up",
        ok: true,
        outcome: "already_up",
        name: s.name.clone(),
        mapper: names::mapper_path(&s.name),
        device: obs.device.block().map(|b| b.path.clone()),
        file: match &s.target {
            Target::File { path, .. } => Some(path.clone()),
            Target::Disk(_) => None,
        },
        mount: s.mount.clone(),
        first_format: plan.first_format,
        steps: Vec::new(),
    };
    if plan.is_noop() {
        info!(
            "already up: {} is open on {} and mounted at {}; no action taken",
            report.mapper.display(),
            s.target.path().display(),
            s.mount.display()
        );
        report.steps = plan
            .steps
            .iter()
            .map(|p| StepReport {
                step: p.step.name(),
                result: Outcome::AlreadyDone,
            })
            .collect();
        return if s.json { print_json(&report) } else { Ok(()) };
    }

    // Preflight: nothing has been written yet, and nothing will be if any
    // of these fail.
    cmd::verify_executables(&[Tool::MkfsExt4, Tool::Wipefs])?;
    if plan.needs_key() {
        ensure_dm_crypt(&obs)?;
    }
    let key = if plan.needs_key() {
        let source = key_source(&s);
        info!(
            "{}; fetching the key from {}",
            describe_state(&s, &obs),
            source.describe()
        );
        Some(Key {
            pass: source.fetch(plan.first_format)?,
            origin: source.origin(),
            from: source.describe(),
        })
    } else {
        None
    };
    fault::point("key");
    report.steps = exec::run(&plan, key)?;
    report.outcome = "up";
    if report.device.is_none() {
        report.device = observe::sys::loop_device_of_file(root, s.target.path());
    }
    info!(
        "up: {} ({}) mounted at {}",
        report.mapper.display(),
        report
            .device
            .as_deref()
            .unwrap_or(s.target.path())
            .display(),
        s.mount.display()
    );
    if s.json {
        print_json(&report)?;
    }
    Ok(())
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
    anyhow::bail!("the kernel has no dm-crypt target, and `modprobe dm-crypt` did not load it (Debian: linux-image; Amazon Linux: kernel modules)")
}

fn describe_state(s: &Up, obs: &Observed) -> String {
    let t = s.target.path().display();
    match obs.device.content.as_ref().map(plan::classify) {
        None => format!("{t} does not exist yet; creating a new volume"),
        Some(Class::Ours { .. }) => format!("LUKS2 header found on {t} (ours); opening"),
        Some(Class::Blank) => format!("{t} is blank; creating a new volume"),
        Some(Class::HalfMade { .. }) => format!("{t} holds a half-made volume; formatting again"),
        Some(Class::Foreign(what) | Class::Damaged(what)) => {
            format!("{t} holds {what} and --force was given; formatting")
        }
    }
}

/// Resolves `--disk auto` to an instance-store NVMe disk: the one that
/// already holds a secretfs volume, else the first blank one, else the
/// first (which the planner then refuses with the reason).
fn resolve_auto_disk(root: &Path, s: &mut Up) -> Result<()> {
    let Target::Disk(d) = &s.target else {
        return Ok(());
    };
    if d != Path::new("auto") {
        return Ok(());
    }
    let model = std::env::var(names::ENV_MODEL_OVERRIDE)
        .unwrap_or_else(|_| names::INSTANCE_STORE_MODEL.to_string());
    let disks = observe::sys::instance_store_disks(root, &model);
    if disks.is_empty() {
        return usage(format!(
            "--disk auto found no instance-store NVMe disk (model '{model}'): this instance type may have none, \
             or exposes it as /dev/xvdb-style: name it with --disk"
        ));
    }
    let classes: Vec<Class> = disks
        .iter()
        .map(|d| content::examine(&names::under(root, d)).map(|c| plan::classify(&c)))
        .collect::<Result<_>>()?;
    let pick = classes
        .iter()
        .position(|c| matches!(c, Class::Ours { .. }))
        .or_else(|| classes.iter().position(|c| *c == Class::Blank))
        .unwrap_or(0);
    info!(
        "--disk auto: {} instance-store disk(s); using {}",
        disks.len(),
        disks[pick].display(),
    );
    s.target = Target::Disk(disks[pick].clone());
    Ok(())
}

fn print_plan(s: &Up, obs: &Observed, plan: &Result<Plan, Refusal>) -> Result<()> {
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
                s.target.path().display(),
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
                    key_source(s).describe()
                )?;
            }
        }
        Err(r) => writeln!(out, "would refuse: {r}")?,
    }
    Ok(())
}
