//! `secretfs status`: what the volume is, what it sits on, where it is
//! mounted. Read-only.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::print_json;
use crate::cli::StatusArgs;
use crate::config;
use crate::error::Failure;
use crate::keys::data_key::Scope;
use crate::luks::header::{self, LuksInfo};
use crate::names::{self, under};
use crate::observe::{content, sys, Signature};

#[derive(Serialize)]
struct MountReport {
    path: PathBuf,
    fstype: String,
    size_bytes: u64,
    used_bytes: u64,
    available_bytes: u64,
}

#[derive(Serialize)]
struct MemberReport {
    /// The member's index in the set (from its token), from 0.
    index: Option<u32>,
    mapper: PathBuf,
    device: Option<PathBuf>,
    serial: Option<String>,
    size_bytes: u64,
    /// `open`, or what the header says when it is not ours.
    state: String,
}

#[derive(Serialize)]
struct SetReport {
    id: String,
    layout: Option<String>,
    chunk_bytes: Option<u64>,
    members: Vec<MemberReport>,
}

#[derive(Serialize)]
pub struct StatusReport {
    command: &'static str,
    /// The same as `up`: the command's verdict.
    ok: bool,
    name: String,
    mapper: PathBuf,
    /// Open and mounted; false exits 6 (`EXIT_NOT_UP`).
    up: bool,
    open: bool,
    device: Option<PathBuf>,
    loop_file: Option<PathBuf>,
    loop_attached_by_secretfs: Option<bool>,
    luks: Option<LuksInfo>,
    label: Option<String>,
    subsystem: Option<String>,
    /// A striped set: its id, layout and members (`device` and `luks`
    /// then describe member 0).
    set: Option<SetReport>,
    /// The mapping stack, top first (`secretfs` → `secretfs-0` → `/dev/nvme1n1`).
    stack: Vec<String>,
    mounts: Vec<MountReport>,
    note: Option<String>,
}

/// What is there for the volume NAME, read under `root`.
pub fn report(root: &Path, name: &str) -> Result<StatusReport> {
    let mapper = names::mapper_path(name);
    let mut r = StatusReport {
        command: "status",
        ok: true,
        name: name.to_string(),
        mapper: mapper.clone(),
        up: false,
        open: false,
        device: None,
        loop_file: None,
        loop_attached_by_secretfs: None,
        luks: None,
        label: None,
        subsystem: None,
        set: None,
        stack: Vec::new(),
        mounts: Vec::new(),
        note: None,
    };
    match &sys::mapping(root, name) {
        sys::Mapping::Unavailable { reason } => {
            r.note = Some(format!("device-mapper unavailable: {reason}"))
        }
        sys::Mapping::Absent => r.note = Some(format!("{} is not open", mapper.display())),
        m @ sys::Mapping::Open { devno, on, .. } => {
            r.open = true;
            let mut on = on.clone();
            if let Some(id) = m.set_id() {
                let set = set_report(root, id, &on)?;
                r.stack = set_stack(name, &set);
                // Member 0 describes the LUKS2 side below.
                on = set
                    .members
                    .iter()
                    .find(|m| m.index == Some(0))
                    .or(set.members.first())
                    .and_then(|m| sys::devno_of_path(root, m.device.as_deref()?))
                    .into_iter()
                    .collect();
                r.set = Some(set);
            }
            if let Some(d) = on.first() {
                r.device = sys::dev_path(root, *d);
                if let Some(l) = sys::loop_of(root, *d) {
                    r.loop_file = Some(l.file);
                    r.loop_attached_by_secretfs = Some(l.autoclear);
                }
                if let Some(dev) = &r.device {
                    let at = under(root, dev);
                    r.luks = header::inspect(&at)?;
                    let sigs = content::signatures(&content::open(&at)?, &at)?;
                    if let Some(Signature::Luks {
                        label, subsystem, ..
                    }) = sigs
                        .into_iter()
                        .find(|s| matches!(s, Signature::Luks { .. }))
                    {
                        r.label = label;
                        r.subsystem = subsystem;
                    }
                }
            }
            if r.stack.is_empty() {
                r.stack.push(mapper.display().to_string());
                if let Some(d) = &r.device {
                    r.stack.push(d.display().to_string());
                }
            }
            for m in sys::mounts(root)?.into_iter().filter(|m| m.devno == *devno) {
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
    r.up = r.open && !r.mounts.is_empty();
    r.ok = r.up;
    Ok(r)
}

impl StatusReport {
    /// Why the volume is not up, as the failure `status` and `wait` exit
    /// with; None when it is up.
    pub fn not_up(&self) -> Option<Failure> {
        if self.up {
            return None;
        }
        let why = match (&self.note, self.open) {
            (Some(n), _) => n.clone(),
            (None, true) => format!("{} is open but not mounted", self.mapper.display()),
            (None, false) => format!("{} is not open", self.mapper.display()),
        };
        Some(Failure::NotUp(format!("{why}; `secretfs up` brings it up")))
    }
}

/// `secretfs status`.
pub fn run(args: &StatusArgs) -> Result<()> {
    let v = config::volume(&args.volume, None, args.json)?;
    let root = Path::new("/");
    if v.each_disk {
        return each_disk(root, &v);
    }
    let r = report(root, &v.name)?;
    match v.json {
        true => print_json(&r)?,
        false => print_text(&r)?,
    }
    r.not_up().map_or(Ok(()), |f| Err(f.into()))
}

/// `each-disk = true` in the config: every open `NAME-diskN`, in index
/// order; exit 6 unless there is one and each is up.
fn each_disk(root: &Path, v: &crate::settings::Volume) -> Result<()> {
    let reports = sys::disk_volumes(root, &v.name)
        .iter()
        .map(|name| report(root, name))
        .collect::<Result<Vec<_>>>()?;
    if v.json {
        print_json(&serde_json::json!({
            "command": "status",
            "each_disk": true,
            "ok": !reports.is_empty() && reports.iter().all(|r| r.up),
            "volumes": reports,
        }))?;
    } else {
        for r in &reports {
            print_text(r)?;
        }
    }
    if reports.is_empty() {
        return Err(Failure::NotUp(format!(
            "no volume {}-diskN is open (each-disk = true); `secretfs up` brings them up",
            v.name
        ))
        .into());
    }
    reports
        .iter()
        .find_map(StatusReport::not_up)
        .map_or(Ok(()), |f| Err(f.into()))
}

/// `status` for people.
fn print_text(r: &StatusReport) -> Result<()> {
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
    if let Some(set) = &r.set {
        writeln!(
            out,
            "set:     {} ({}, {} members, {} KiB chunks)",
            set.id,
            set.layout.as_deref().unwrap_or("?"),
            set.members.len(),
            set.chunk_bytes.unwrap_or(0) >> 10
        )?;
        for m in &set.members {
            writeln!(
                out,
                "member:  {} {} on {} (serial {}, {} MiB, {})",
                m.index.map_or("?".to_string(), |i| i.to_string()),
                m.mapper.display(),
                m.device
                    .as_ref()
                    .map_or("?".into(), |d| d.display().to_string()),
                m.serial.as_deref().unwrap_or("-"),
                m.size_bytes >> 20,
                m.state
            )?;
        }
    } else if let Some(d) = &r.device {
        writeln!(out, "device:  {}", d.display())?;
    }
    if !r.stack.is_empty() {
        writeln!(out, "stack:   {}", r.stack.join(" → "))?;
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
        match &l.token {
            Some(t) => writeln!(
                out,
                "volume:  {} ({:?}, filesystem {})",
                t.volume,
                t.state,
                t.filesystem.as_deref().unwrap_or("not made yet")
            )?,
            None => writeln!(
                out,
                "volume:  no secretfs token (made before tokens; `up` adds one)"
            )?,
        }
        if let Some(t) = &l.token {
            if t.ephemeral {
                writeln!(
                    out,
                    "key:     ephemeral: a random key only the kernel holds, no key slot; the volume \
                     and its data are made anew every boot (and after `down`)"
                )?;
            }
            if let Some(k) = &t.data_key {
                writeln!(
                    out,
                    "key:     {} in the header, wrapped by {}{}{}",
                    match (k.scope, &t.set) {
                        (Scope::Set, Some(set)) => format!("the data key of set {set} (one for all its members)"),
                        (_, Some(_)) => "this member's own data key (made before sets had one key: `secretfs rotate` moves the set to one)".into(),
                        (_, None) => "its own data key".into(),
                    },
                    k.kms_key,
                    if k.instance {
                        ", bound to the instance that made it"
                    } else {
                        ""
                    },
                    if t.next_key.is_some() || t.retire_slot.is_some() {
                        "; a rotation was interrupted: run `secretfs rotate` to finish it"
                    } else {
                        ""
                    }
                )?;
            }
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

/// The members of the set `id` under its stripe (on = the member mappings).
fn set_report(root: &Path, id: &str, on: &[sys::DevNo]) -> Result<SetReport> {
    let mut set = SetReport {
        id: id.to_string(),
        layout: None,
        chunk_bytes: None,
        members: Vec::new(),
    };
    for d in on {
        let name = sys::dm_name(root, *d).unwrap_or_else(|| d.to_string());
        let below = match sys::mapping(root, &name) {
            sys::Mapping::Open { on, .. } => on.first().copied(),
            _ => None,
        };
        let device = below.and_then(|b| sys::dev_path(root, b));
        let mut m = MemberReport {
            index: None,
            mapper: names::mapper_path(&name),
            serial: below
                .and_then(|b| sys::read_trim(&sys::sys_dev(root, b).join("device/serial"))),
            size_bytes: below
                .and_then(|b| sys::read_trim(&sys::sys_dev(root, b).join("size")))
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0)
                * 512,
            device: device.clone(),
            state: "open".into(),
        };
        if let Some(dev) = &device {
            match header::inspect(&under(root, dev))?.and_then(|l| l.token) {
                Some(t) => {
                    m.index = t.member;
                    set.layout = set.layout.or(t.layout.clone());
                    set.chunk_bytes = set.chunk_bytes.or(t.chunk);
                    if t.set.as_deref() != Some(id) {
                        m.state = format!("open, but its token names set {:?}", t.set);
                    }
                }
                None => m.state = "open, but no secretfs token".into(),
            }
        }
        set.members.push(m);
    }
    set.members.sort_by_key(|m| m.index.unwrap_or(u32::MAX));
    Ok(set)
}

/// The mapping stack of a set, top first.
fn set_stack(name: &str, set: &SetReport) -> Vec<String> {
    let members: Vec<String> = set
        .members
        .iter()
        .map(|m| {
            format!(
                "{} ({})",
                m.mapper.display(),
                m.device
                    .as_ref()
                    .map_or("?".into(), |d| d.display().to_string())
            )
        })
        .collect();
    vec![
        format!("{} (striped)", names::mapper_path(name).display()),
        format!("[{}] (LUKS2)", members.join(", ")),
    ]
}
