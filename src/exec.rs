//! The one executor: runs a plan's steps in order under a rollback, and
//! reports a typed outcome for each. Every operand comes from the step;
//! the only state carried between steps is what an earlier step of the
//! same run produced (the loop device it attached, the key it used).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;
use tracing::{error, info, warn};

use crate::cmd::{self, Tool};
use crate::device;
use crate::error::refused;
use crate::fault;
use crate::fs;
use crate::keys::data_key::{DataKeys, Owner, WrappedKey, DATA_KEY_BYTES};
use crate::keys::ephemeral::EphemeralKeys;
use crate::keys::{random_bytes, KeyOrigin, Passphrase, HIGH_ENTROPY_MIN};
use crate::luks::header::TokenFound;
use crate::luks::token::Place;
use crate::luks::{self, FormatOptions, Kdf, SlotKey};
use crate::member::{self, FormatJob, OpenJob, OpenKey};
use crate::names;
use crate::observe::{content, sys};
use crate::plan::{self, Class, Dev, FsTodo, MemberToOpen, NewHeader, Plan, Step, Todo};
use crate::settings::{Filesystem, PbkdfChoice};
use crate::signals;
use crate::stripe;

/// What running a step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The machine already showed it done; no action taken.
    AlreadyDone,
    /// Done now.
    Done,
}

/// A step and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: &'static str,
    pub result: Outcome,
    /// Wall-clock seconds the step took (0 when already done): where the
    /// time to mounted goes, per step.
    pub seconds: f64,
    /// `format_members`, `open_members`: the seconds each member's work
    /// took, in member order (their sum over `seconds` is how parallel
    /// they ran).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<f64>,
}

/// Seconds since `started`, to the millisecond: the times `up --json`
/// reports.
pub fn seconds_since(started: std::time::Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// Undo actions for partial work, run in reverse on drop unless committed.
/// Stops at the first undo that fails: nothing beneath a still-mounted
/// filesystem is torn down.
pub struct Rollback {
    undo: Vec<(String, Undo)>,
}

type Undo = Box<dyn FnOnce() -> Result<()>>;

impl Rollback {
    pub fn new() -> Self {
        Rollback { undo: Vec::new() }
    }
    pub fn push(&mut self, what: impl Into<String>, f: impl FnOnce() -> Result<()> + 'static) {
        self.undo.push((what.into(), Box::new(f)));
    }
    pub fn commit(mut self) {
        self.undo.clear();
    }
}

impl Default for Rollback {
    fn default() -> Self {
        Self::new()
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

/// The key for the steps that need one.
pub enum Key {
    /// One passphrase for every volume the plan formats or opens.
    Shared {
        pass: Passphrase,
        origin: KeyOrigin,
        /// Where it came from, for messages.
        from: String,
    },
    /// A data key in the header, made on format (one per volume: a set
    /// is one volume) and kept wrapped in every member's token.
    DataKeys(DataKeys),
    /// Each volume's random key, made on format and kept nowhere.
    Ephemeral(EphemeralKeys),
}

/// The key one format or open hands the LUKS layer. A data key is made or
/// decrypted here, with KMS, before any disk work: the LUKS layer gets a
/// passphrase only.
enum Held<'a> {
    Slot(SlotKey<'a>),
    /// A new data key and its record.
    Made(Passphrase, WrappedKey),
    /// The data key the header records, decrypted (`None`: it records
    /// none, which the LUKS layer refuses by name).
    Decrypted(Option<Passphrase>),
}

impl Held<'_> {
    /// The passphrase and data key record a child process can format a
    /// member with; `None` for a key that is no passphrase (ephemeral).
    fn for_children(&self) -> Option<(&Passphrase, Option<&WrappedKey>)> {
        match self {
            Held::Slot(SlotKey::Given { pass, .. }) => Some((pass, None)),
            Held::Made(pass, record) => Some((pass, Some(record))),
            _ => None,
        }
    }

    /// The key a child process can open a member with, and what it is.
    fn for_open_child(&self) -> Option<(OpenKey, &Passphrase)> {
        match self {
            Held::Slot(SlotKey::Given { pass, from }) => Some((
                OpenKey::Given {
                    from: from.to_string(),
                },
                pass,
            )),
            Held::Decrypted(Some(pass)) => Some((OpenKey::HeaderDataKey, pass)),
            _ => None,
        }
    }

    fn slot(&self) -> SlotKey<'_> {
        match self {
            Held::Slot(s) => *s,
            Held::Made(pass, record) => SlotKey::NewDataKey { pass, record },
            Held::Decrypted(p) => SlotKey::HeaderDataKey(p.as_ref()),
        }
    }
}

impl Key {
    /// The key for new headers whose data key `owner` names: the new
    /// volume, or the whole set (one data key for all its members).
    fn for_format(&self, owner: Owner<'_>) -> Result<Held<'_>> {
        Ok(match self {
            Key::Shared { pass, from, .. } => Held::Slot(SlotKey::Given { pass, from }),
            Key::DataKeys(k) => {
                let (pass, record) = k.make(owner)?;
                Held::Made(pass, record)
            }
            Key::Ephemeral(k) => Held::Slot(SlotKey::Ephemeral(k)),
        })
    }

    /// The key that opens the header on `dev`. A data key is decrypted
    /// once per run for the owner its record names: a set's members share
    /// one record, so a set costs one KMS call.
    fn for_open(&self, dev: &Path) -> Result<Held<'_>> {
        Ok(match self {
            Key::Shared { pass, from, .. } => Held::Slot(SlotKey::Given { pass, from }),
            Key::DataKeys(k) => Held::Decrypted(header_data_key(k, dev)?),
            Key::Ephemeral(k) => Held::Slot(SlotKey::Ephemeral(k)),
        })
    }

    /// Where the key slot's passphrase comes from and its length: what
    /// `--pbkdf auto` decides on.
    fn strength(&self) -> (KeyOrigin, usize) {
        match self {
            Key::Shared { pass, origin, .. } => (*origin, pass.len()),
            Key::DataKeys(_) => (KeyOrigin::Kms, DATA_KEY_BYTES),
            // No key slot: the KDF is never run.
            Key::Ephemeral(_) => (KeyOrigin::Kms, crate::luks::VOLUME_KEY_BYTES),
        }
    }
}

/// The data key the header on `dev` records, decrypted for the owner its
/// record names (the header's own UUID, or the set its token names);
/// `None` when it records none.
fn header_data_key(keys: &DataKeys, dev: &Path) -> Result<Option<Passphrase>> {
    let Some(h) = luks::header::read(dev)? else {
        return Ok(None);
    };
    let TokenFound::Present { token, .. } = &h.token else {
        return Ok(None);
    };
    let Some(w) = &token.data_key else {
        return Ok(None);
    };
    keys.open(token.key_owner(&h.uuid, w)?, w).map(Some)
}

/// A new volume's LUKS UUID (version 4, from the kernel's CSPRNG), chosen
/// before its header is written: its data key's context names it.
fn new_uuid() -> Result<uuid::Uuid> {
    Ok(uuid::Builder::from_random_bytes(random_bytes()?).into_uuid())
}

/// The KDF for a new key slot: PBKDF2 only for a KMS key of high entropy.
pub fn kdf_for(choice: PbkdfChoice, origin: KeyOrigin, pass_len: usize) -> Kdf {
    match choice {
        PbkdfChoice::Pbkdf2 => Kdf::Pbkdf2,
        PbkdfChoice::Argon2id => Kdf::Argon2id,
        PbkdfChoice::Auto if origin == KeyOrigin::Kms && pass_len >= HIGH_ENTROPY_MIN => {
            Kdf::Pbkdf2
        }
        PbkdfChoice::Auto => Kdf::Argon2id,
    }
}

struct Run {
    rollback: Rollback,
    /// The loop device this run attached; held until the mapping holds it.
    attached: Option<device::AttachedLoop>,
    key: Option<Key>,
    /// The seconds of each member's work in the step that just ran.
    member_seconds: Vec<f64>,
}

impl Run {
    fn dev(&self, d: &Dev) -> Result<PathBuf> {
        match d {
            Dev::Path { path } => Ok(path.clone()),
            Dev::Attached { file } => self
                .attached
                .as_ref()
                .map(|l| l.path.clone())
                .with_context(|| format!("{} was not attached in this run", file.display())),
        }
    }

    fn key(&self) -> Result<&Key> {
        self.key
            .as_ref()
            .context("no key was fetched for this step")
    }
}

/// Runs `plan` (the key, if it needs one, already fetched).
pub fn run(plan: &Plan, key: Option<Key>) -> Result<Vec<StepReport>> {
    let mut r = Run {
        rollback: Rollback::new(),
        attached: None,
        key,
        member_seconds: Vec::new(),
    };
    let mut reports = Vec::new();
    // The passphrase is dropped (zeroed, unlocked) after the last step
    // that needs it.
    let last_key_step = plan
        .steps
        .iter()
        .rposition(|p| p.todo != Todo::AlreadyDone && p.step.needs_key());
    for (i, p) in plan.steps.iter().enumerate() {
        let started = std::time::Instant::now();
        let outcome = if p.todo == Todo::AlreadyDone {
            Outcome::AlreadyDone
        } else {
            signals::check()?;
            let o = step(&mut r, plan, &p.step)
                .with_context(|| format!("{} ({})", p.step.name(), p.step))?;
            if Some(i) == last_key_step {
                drop(r.key.take());
            }
            fault::point(p.step.name());
            o
        };
        reports.push(StepReport {
            step: p.step.name(),
            result: outcome,
            seconds: seconds_since(started),
            members: std::mem::take(&mut r.member_seconds),
        });
    }
    signals::check()?;
    // The mapping now holds the loop device; our handle can go.
    drop(r.attached.take());
    drop(r.key.take());
    r.rollback.commit();
    Ok(reports)
}

fn step(r: &mut Run, plan: &Plan, s: &Step) -> Result<Outcome> {
    match s {
        Step::CreateFile { path, size } => {
            device::create_sparse(path, *size)?;
            info!(
                "created {} ({} MiB, sparse, mode 0600)",
                path.display(),
                size >> 20
            );
        }
        Step::AttachLoop { file } => {
            let l = device::attach(file)?;
            info!("attached {} to {}", file.display(), l.path.display());
            r.attached = Some(l);
        }
        Step::WipeSignatures { dev, found } => {
            let dev = r.dev(dev)?;
            warn!("--force: erasing {found} on {}", dev.display());
            cmd::run(Tool::Wipefs, &["--all".as_ref(), dev.as_os_str()], &[])?;
            let left = content::signatures(&content::open(&dev)?, &dev)?;
            if !left.is_empty() {
                anyhow::bail!(
                    "signatures remain on {} after wipefs: {}",
                    dev.display(),
                    left.iter()
                        .map(|s| s.describe())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        Step::Format { dev, header, again } => {
            let dev = r.dev(dev)?;
            // A forced plan wiped the signatures just now.
            if plan.forced.is_none() {
                unchanged(&dev, *again)?;
            }
            let key = r.key()?;
            let opts = format_options(header, key);
            let chosen = new_uuid()?;
            let held = key.for_format(Owner::Volume(&chosen.to_string()))?;
            let uuid = luks::format(&dev, held.slot(), &opts, None, Some(chosen))?;
            info!(
                "formatted {} as LUKS2 {uuid} (aes-xts-plain64, 512-bit key, {}-byte sectors, {:?}{})",
                dev.display(),
                opts.sector_size,
                opts.kdf,
                if opts.no_workqueues {
                    ", no_read/no_write_workqueue"
                } else {
                    ""
                }
            );
        }
        Step::FormatMembers {
            members,
            header,
            set,
            chunk,
        } => {
            let devs = members
                .iter()
                .map(|m| r.dev(&m.dev))
                .collect::<Result<Vec<_>>>()?;
            let key = r.key()?;
            let opts = format_options(header, key);
            let check = plan.forced.is_none();
            let count = members.len() as u32;
            // One key for the whole set, made before any member's work (a
            // key per member, as releases before made it, only for the
            // tests that check such sets still open).
            let per_member = fault::legacy("set_key") && matches!(key, Key::DataKeys(_));
            let held = match per_member {
                false => Some(key.for_format(Owner::Set(set))?),
                true => None,
            };
            // A key slot's passphrase goes to a process per member, whose
            // libcryptsetup is its own (crate::member).
            let children = held.as_ref().and_then(Held::for_children);
            // Each member examines its disk again and writes its header.
            let jobs: Vec<FormatJob> = members
                .iter()
                .zip(&devs)
                .map(|(m, dev)| FormatJob {
                    dev: dev.clone(),
                    opts: opts.clone(),
                    place: Place {
                        set: set.clone(),
                        member: m.member,
                        members: count,
                        chunk: *chunk,
                    },
                    check,
                    again: m.again,
                    record: children.and_then(|(_, record)| record.cloned()),
                })
                .collect();
            let uuids = match children {
                Some((pass, _)) => member::format_all(&jobs, pass)?,
                // No key slot (an ephemeral volume key stays in this
                // process, which opens with it), or a key per member: a
                // thread per member.
                None => crate::parallel::each(&jobs, "formatting a member", |job| {
                    let started = std::time::Instant::now();
                    let uuid = match &held {
                        Some(held) => format_member(job, held.slot()),
                        None => {
                            let chosen = new_uuid()?;
                            let own = key.for_format(Owner::Volume(&chosen.to_string()))?;
                            format_member_as(job, own.slot(), Some(chosen))
                        }
                    }?;
                    Ok((uuid, seconds_since(started)))
                })?,
            };
            let (uuids, seconds): (Vec<String>, Vec<f64>) = uuids.into_iter().unzip();
            r.member_seconds = seconds;
            for (dev, uuid) in devs.iter().zip(&uuids) {
                info!(
                    "formatted {} as LUKS2 {uuid}, member of set {set}",
                    dev.display()
                );
            }
        }
        Step::MarkReady { devs } => {
            for d in devs {
                let d = r.dev(d)?;
                luks::mark_ready(&d)?;
            }
            info!("marked {} members ready", devs.len());
        }
        Step::CreateStripe {
            name,
            members,
            set,
            chunk,
        } => {
            let path = stripe::create(name, members, set, *chunk)?;
            info!(
                "striped {} over {} members ({} KiB chunks)",
                path.display(),
                members.len(),
                chunk >> 10
            );
            let name = name.clone();
            r.rollback
                .push(format!("remove {}", path.display()), move || {
                    stripe::remove(&name)
                });
        }
        Step::RemoveStripe { name } => {
            stripe::remove(name)?;
            info!(
                "removed the stripe {}",
                crate::names::mapper_path(name).display()
            );
        }
        Step::Open { dev, name, discard } => {
            let dev = r.dev(dev)?;
            let held = r.key()?.for_open(&dev)?;
            luks::open(&dev, name, held.slot(), *discard)?;
            opened(r, &dev, name);
        }
        Step::OpenMembers { members, discard } => {
            let devs = members
                .iter()
                .map(|m| r.dev(&m.dev))
                .collect::<Result<Vec<_>>>()?;
            r.member_seconds = open_members(r.key()?, members, &devs, *discard)?;
            for (m, dev) in members.iter().zip(&devs) {
                opened(r, dev, &m.name);
            }
        }
        Step::Wipe { mapper } => {
            info!(
                "wiping {} with zeros (--wipe); this takes time proportional to its size",
                mapper.display()
            );
            fs::wipe(mapper)?;
        }
        Step::MakeFilesystem {
            mapper,
            devs,
            record,
            fs: kind,
            stripe,
        } => {
            let devs = devs.iter().map(|d| r.dev(d)).collect::<Result<Vec<_>>>()?;
            let inner = content::examine_inner(mapper)?;
            match plan::filesystem(record, *kind, &inner, mapper)
                .map_err(plan::Refusal::into_error)?
            {
                FsTodo::Make => {
                    fs::mkfs(*kind, mapper, *stripe)?;
                    info!("made {kind} on {}", mapper.display());
                    record_fs(&devs, *kind)?;
                }
                FsTodo::Have { record: true } => {
                    info!(
                        "{} holds {kind}; recording it in the header's secretfs token",
                        mapper.display()
                    );
                    record_fs(&devs, *kind)?;
                }
                FsTodo::Have { record: false } => {
                    info!("{} already holds {kind}; no action taken", mapper.display());
                    return Ok(Outcome::AlreadyDone);
                }
            }
        }
        Step::CreateMountPoint { dir } => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Step::Mount {
            mapper,
            dir,
            fs: kind,
            options,
        } => {
            fs::mount(mapper, dir, *kind, options)?;
            info!("mounted {} at {}", mapper.display(), dir.display());
            let dir = dir.clone();
            r.rollback
                .push(format!("unmount {}", dir.display()), move || {
                    fs::umount(&dir)
                });
        }
        Step::MakeSwap { mapper, dev } => {
            let dev = r.dev(dev)?;
            fs::mkswap(mapper)?;
            info!("made swap space on {}", mapper.display());
            luks::update_token(&dev, |t| t.filesystem = Some(names::SWAP_TYPE.into()))
                .with_context(|| {
                    format!(
                        "recording the swap space in the header of {}",
                        dev.display()
                    )
                })?;
        }
        Step::SwapOn {
            mapper,
            priority,
            discard,
        } => {
            fs::swapon(mapper, *priority, *discard)?;
            info!("enabled swap on {}", mapper.display());
            let mapper = mapper.clone();
            r.rollback
                .push(format!("disable swap on {}", mapper.display()), move || {
                    fs::swapoff(&mapper)
                });
        }
        Step::SwapOff { mapper } => {
            fs::swapoff(mapper)?;
            info!("disabled swap on {}", mapper.display());
        }
        Step::Unmount { dir } => {
            fs::umount(dir)?;
            info!("unmounted {}", dir.display());
        }
        Step::Close { name } => {
            luks::close(name)?;
            info!("closed {}", crate::names::mapper_path(name).display());
        }
        Step::Shred { target, file } => {
            let erased = luks::erase(target)?;
            if *file {
                device::punch_out(target)?;
            } else {
                let size = content::size_of_path(target)?;
                device::zero(target, &content::windows(size))?;
            }
            info!(
                "shredded {}: {} key slot(s) destroyed, {} header bytes zeroed",
                target.display(),
                erased.key_slots,
                erased.header_bytes
            );
        }
        Step::Detach { dev, file } => {
            // Autoclear detaches on last close; make sure of it.
            let attached = || sys::loop_attached(Path::new("/"), dev);
            if attached() {
                if let Err(e) = device::detach(dev) {
                    if attached() {
                        return Err(e);
                    }
                }
            }
            info!("detached {} ({})", dev.display(), file.display());
        }
    }
    Ok(Outcome::Done)
}

/// Logs an open and puts its close on the rollback.
fn opened(r: &mut Run, dev: &Path, name: &str) {
    let mapper = names::mapper_path(name);
    info!("opened {} as {}", dev.display(), mapper.display());
    let name = name.to_string();
    r.rollback
        .push(format!("close {}", mapper.display()), move || {
            luks::close(&name)
        });
}

/// Opens every member on `devs` as its name in `members`; returns the
/// seconds each open took. On failure the members this opened are closed
/// again.
fn open_members(
    key: &Key,
    members: &[MemberToOpen],
    devs: &[PathBuf],
    discard: bool,
) -> Result<Vec<f64>> {
    // Each member's key (a set's one data key is decrypted once).
    let held = devs
        .iter()
        .map(|d| key.for_open(d))
        .collect::<Result<Vec<_>>>()?;
    let done = match unlock_cost(&held, devs)? {
        // argon2: a process per member, at most what the CPUs and the
        // memory allow (crate::member).
        Some(memory_each) => {
            let jobs: Vec<(OpenJob, &Passphrase)> = members
                .iter()
                .zip(devs)
                .zip(&held)
                .map(|((m, dev), h)| {
                    let (key, pass) = h.for_open_child().expect("unlock_cost checked");
                    let job = OpenJob {
                        dev: dev.clone(),
                        name: m.name.clone(),
                        discard,
                        key,
                    };
                    (job, pass)
                })
                .collect();
            member::open_all(&jobs, Some(memory_each))
        }
        // PBKDF2 (or no key slot): here, one after another; each open
        // costs less than starting a process.
        None => members
            .iter()
            .zip(devs)
            .zip(&held)
            .map(|((m, dev), h)| {
                let started = std::time::Instant::now();
                luks::open(dev, &m.name, h.slot(), discard)?;
                Ok(seconds_since(started))
            })
            .collect(),
    };
    if done.is_err() {
        for m in members {
            if names::mapper_path(&m.name).exists() {
                if let Err(e) = luks::close(&m.name) {
                    warn!("closing {} after a failed open: {e:#}", m.name);
                }
            }
        }
    }
    done
}

/// What each member's unlock costs when it pays to run the opens in a
/// process each: `Some(bytes)` of memory per unlock when a key slot is
/// argon2 and every member has a passphrase to hand over; `None`: open
/// here (PBKDF2 slots, an ephemeral key, or a header without the key the
/// LUKS layer then refuses by name).
fn unlock_cost(held: &[Held<'_>], devs: &[PathBuf]) -> Result<Option<u64>> {
    if held.len() < 2 || held.iter().any(|h| h.for_open_child().is_none()) {
        return Ok(None);
    }
    let mut most = None;
    for dev in devs {
        if let Some(c) = luks::header::slot_cost(dev)? {
            if c.kdf == Kdf::Argon2id {
                let bytes = u64::from(c.memory_kib) << 10;
                most = Some(most.map_or(bytes, |m: u64| m.max(bytes)));
            }
        }
    }
    Ok(most)
}

fn record_fs(devs: &[PathBuf], kind: Filesystem) -> Result<()> {
    for dev in devs {
        luks::update_token(dev, |t| t.filesystem = Some(kind.as_str().into())).with_context(
            || {
                format!(
                    "recording the filesystem in the header of {}",
                    dev.display()
                )
            },
        )?;
    }
    Ok(())
}

/// One member's format (in its own process, [`member`]): examines its
/// disk again, unless `--force` wiped it, and writes its header; returns
/// its LUKS UUID.
pub fn format_member(job: &FormatJob, key: SlotKey<'_>) -> Result<String> {
    format_member_as(job, key, None)
}

/// [`format_member`] with the LUKS UUID `uuid` when the caller chose it.
fn format_member_as(job: &FormatJob, key: SlotKey<'_>, uuid: Option<uuid::Uuid>) -> Result<String> {
    if job.check {
        unchanged(&job.dev, job.again)?;
    }
    luks::format(&job.dev, key, &job.opts, Some(&job.place), uuid)
}

/// Looks again right before writing a header: refuses if anything
/// appeared since the plan was made. `again`: over a header of ours that
/// never held data (half-made, or a member of a set never finished), or
/// an ephemeral one whose key is gone.
fn unchanged(dev: &Path, again: bool) -> Result<()> {
    let now = plan::classify(&content::examine(dev)?);
    let still = match &now {
        Class::Blank => !again,
        Class::HalfMade { .. } => again,
        Class::Ours {
            place: Some(_),
            record: plan::FsRecord::Token { filesystem: None },
            ..
        } => again,
        // Ephemeral, and its key gone (the plan found it closed).
        Class::Ours {
            ephemeral: true, ..
        } => again,
        _ => false,
    };
    if !still {
        return refused(format!(
            "{} changed since it was examined ({now:?}); not formatting",
            dev.display()
        ));
    }
    Ok(())
}

fn format_options(h: &NewHeader, key: &Key) -> FormatOptions {
    FormatOptions {
        label: h.label.clone(),
        sector_size: h.sector_size,
        kdf: {
            let (origin, len) = key.strength();
            kdf_for(h.pbkdf, origin, len)
        },
        no_workqueues: h.no_workqueues,
        discard: h.discard,
        swap: h.swap,
        disk_index: h.disk_index,
    }
}
