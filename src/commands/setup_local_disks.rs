//! `secretfs setup-local-disks`: what EKS's script of that name does for a
//! Kubernetes node, encrypted. nodeadm runs `setup-local-disks STRATEGY
//! --dir DIR [--no-bind-*]` by bare name before it starts containerd and
//! kubelet; `install-unit --k8s-disks` puts a link of this binary first in
//! systemd's PATH under that name. The volume is the config file's (the
//! one `secretfs.service` opens before nodeadm runs, so this finds it up),
//! striped over every instance-store disk and mounted at `DIR/0`; then the
//! services' directories are bound onto it (see [`crate::plan::binds`]).
//! The `mount` strategy is a volume per disk instead, at `DIR/N` (from 1,
//! as EKS's script numbers them) with N kept in each volume's header
//! (`each-disk = true` in the config, [`crate::plan::each_disk`]), and no
//! binds, as EKS's script makes none for it.
//! Nothing is written as a mount unit: systemd never tries a mount before
//! the mapping exists, and every boot binds again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::{require_root, up};
use crate::cli::{DiskStrategy, SetupLocalDisksArgs, UpArgs};
use crate::cmd::{self, Tool};
use crate::config;
use crate::error::usage;
use crate::names::{self, under};
use crate::observe::sys::mounts;
use crate::plan::binds::{
    plan_binds, BindDir, BindSeen, BindStep, PathKind, CONTAINERD, KUBELET, POD_LOGS, SOCI,
};
use crate::settings::{NoDisks, Target};

/// `secretfs setup-local-disks`.
pub fn run(a: &SetupLocalDisksArgs) -> Result<()> {
    match a.strategy {
        DiskStrategy::None => {
            info!("disk setup is 'none': nothing to do");
            return Ok(());
        }
        DiskStrategy::Mount => {}
        DiskStrategy::Raid10 => info!(
            "raid10: one volume striped over every disk, as for raid0 (instance store does not \
             outlive a stop, so a mirror keeps nothing a stripe loses)"
        ),
        DiskStrategy::Raid0 => {}
    }
    require_root("secretfs setup-local-disks")?;
    let s = config::up(&UpArgs {
        config: a.config.clone(),
        ..UpArgs::default()
    })?;
    let each_disk = a.strategy == DiskStrategy::Mount;
    // raid0: the volume at DIR/0; mount: the volumes at DIR/N.
    let volume = match each_disk {
        true => a.dir.clone(),
        false => a.dir.join("0"),
    };
    let config = a
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(names::DEFAULT_CONFIG));
    if s.mount != volume || s.each_disk != each_disk {
        let (want, fix) = match each_disk {
            true => (
                format!("a volume per disk under {}", a.dir.display()),
                format!("mount = \"{}\" and each-disk = true", a.dir.display()),
            ),
            false => (
                volume.display().to_string(),
                format!("mount = \"{}\" and no each-disk", volume.display()),
            ),
        };
        return usage(format!(
            "{} mounts the volume at {}{}, but nodeadm asks for {want}: set {fix} there \
             (secretfs.service opens it from the same file)",
            config.display(),
            s.mount.display(),
            if s.each_disk {
                " (each-disk: a volume per disk)"
            } else {
                ""
            },
        ));
    }
    if s.target != Target::Auto {
        return usage(format!(
            "{}: set disk = \"auto\" for a Kubernetes node (every instance-store disk, found by \
             its model whatever its name)",
            config.display()
        ));
    }
    let no_disks_ok = s.no_disks == NoDisks::Ok;
    up::bring_up(s)?;
    if each_disk {
        info!(
            "each instance-store disk is a volume of its own under {}; nothing to bind (the mount \
             strategy binds nothing)",
            a.dir.display()
        );
        return Ok(());
    }
    let root = Path::new("/");
    let table = mounts(root)?;
    let Some(ours) = table.iter().rev().find(|m| m.mount_point == volume) else {
        if no_disks_ok {
            info!("no instance-store disk: nothing to bind");
            return Ok(());
        }
        anyhow::bail!("{} is not mounted after up", volume.display());
    };
    let seen: Vec<BindSeen> = chosen(a)
        .into_iter()
        .map(|dir| {
            let path = Path::new(dir.path);
            let bound = table.iter().any(|m| {
                m.mount_point == path
                    && m.devno == ours.devno
                    && m.root == Path::new("/").join(dir.store)
            });
            let kind = match std::fs::symlink_metadata(under(root, path)) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => PathKind::Missing,
                Ok(m) if m.is_dir() => PathKind::Dir,
                _ => PathKind::Other,
            };
            BindSeen {
                dir,
                bound,
                stored: under(root, &volume.join(dir.store)).exists(),
                path: kind,
            }
        })
        .collect();
    let pending = seen.iter().any(|s| !s.bound);
    if pending {
        cmd::verify_executables(&[Tool::Systemctl, Tool::Cp])?;
    }
    // Asked only of the units of directories still to bind.
    let steps = plan_binds(&volume, &seen, is_active).map_err(crate::plan::Refusal::into_error)?;
    for step in &steps {
        execute(step).inspect_err(|_| {
            warn!("stopped at: {step:?}; the services stopped for the binds stay stopped")
        })?;
    }
    info!(
        "{} is the volume; {} bound onto it",
        volume.display(),
        if seen.is_empty() {
            "nothing".to_string()
        } else {
            seen.iter()
                .map(|s| s.dir.path)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(())
}

/// The directories the flags leave to bind.
fn chosen(a: &SetupLocalDisksArgs) -> Vec<BindDir> {
    if a.no_bind_mounts {
        return Vec::new();
    }
    [
        (KUBELET, a.no_bind_kubelet),
        (CONTAINERD, a.no_bind_containerd),
        (SOCI, a.no_bind_soci),
        (POD_LOGS, a.no_bind_pods_logs),
    ]
    .into_iter()
    .filter(|(_, off)| !off)
    .map(|(d, _)| d)
    .collect()
}

/// Whether systemd runs `unit` now.
fn is_active(unit: &str) -> bool {
    cmd::run(
        Tool::Systemctl,
        &["is-active".as_ref(), "--quiet".as_ref(), unit.as_ref()],
        &[1, 2, 3, 4],
    )
    .is_ok_and(|o| o.status.success())
}

fn execute(step: &BindStep) -> Result<()> {
    match step {
        BindStep::StopUnits(units) | BindStep::StartUnits(units) => {
            let verb = match step {
                BindStep::StopUnits(_) => "stop",
                _ => "start",
            };
            let mut args = vec![std::ffi::OsStr::new(verb)];
            args.extend(units.iter().map(|u| std::ffi::OsStr::new(u.as_str())));
            cmd::run(Tool::Systemctl, &args, &[])?;
            info!("{verb} {}", units.join(" "));
        }
        BindStep::Copy { from, to } => {
            let name = to.file_name().context("a directory on the volume")?;
            let tmp = to.with_file_name(format!(".{}.secretfs-copy", name.to_string_lossy()));
            if tmp.exists() {
                // Left by a copy cut short: ours, on the volume.
                std::fs::remove_dir_all(&tmp)
                    .with_context(|| format!("removing {}", tmp.display()))?;
            }
            cmd::run(
                Tool::Cp,
                &["-a".as_ref(), from.as_os_str(), tmp.as_os_str()],
                &[],
            )?;
            std::fs::rename(&tmp, to)
                .with_context(|| format!("renaming {} to {}", tmp.display(), to.display()))?;
            info!("copied {} to {}", from.display(), to.display());
        }
        BindStep::MakeDir { path } => {
            std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?
        }
        BindStep::Bind { from, to } => {
            nix::mount::mount(
                Some(from.as_path()),
                to.as_path(),
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("binding {} over {}", from.display(), to.display()))?;
            info!("bound {} over {}", from.display(), to.display());
        }
    }
    Ok(())
}
