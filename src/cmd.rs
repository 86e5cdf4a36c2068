//! Every external program secretfs runs, by absolute path.
//!
//! Programs are looked up in a fixed list of system directories, never in
//! `$PATH` (user data and units run with whatever PATH they are given).
//! [`verify_executables`] runs before any step that writes, so a missing
//! tool fails the run before anything is touched. Errors carry the argv,
//! the exit status and stderr.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};

use crate::settings::Filesystem;

/// Where programs are looked for, in order.
const SEARCH_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The programs secretfs uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// `wipefs --all`: erases the signatures libblkid finds (`--force`).
    Wipefs,
    /// `mkfs.ext4` or `mkfs.xfs`.
    Mkfs(Filesystem),
    /// `mkswap`, for `secretfs swap`.
    Mkswap,
    /// `modprobe`, to load dm-crypt when the kernel has not yet.
    Modprobe,
    /// `systemctl`, for `install-unit` and `setup-local-disks`.
    Systemctl,
    /// `cp -a`, for `setup-local-disks`: a directory copied onto the
    /// volume with owners, modes, links, extended attributes.
    Cp,
}

impl Tool {
    /// The program's file name.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Wipefs => "wipefs",
            Tool::Mkfs(Filesystem::Ext4) => "mkfs.ext4",
            Tool::Mkfs(Filesystem::Xfs) => "mkfs.xfs",
            Tool::Mkswap => "mkswap",
            Tool::Modprobe => "modprobe",
            Tool::Systemctl => "systemctl",
            Tool::Cp => "cp",
        }
    }

    /// The program's absolute path.
    pub fn path(self) -> Result<PathBuf> {
        SEARCH_DIRS
            .iter()
            .map(|d| PathBuf::from(d).join(self.name()))
            .find(|p| is_executable(p))
            .with_context(|| {
                format!(
                    "{} not found in {}: install it (Debian: {})",
                    self.name(),
                    SEARCH_DIRS.join(", "),
                    match self {
                        Tool::Wipefs | Tool::Mkswap => "util-linux",
                        Tool::Mkfs(Filesystem::Ext4) => "e2fsprogs",
                        Tool::Mkfs(Filesystem::Xfs) => "xfsprogs",
                        Tool::Modprobe => "kmod",
                        Tool::Systemctl => "systemd",
                        Tool::Cp => "coreutils",
                    }
                )
            })
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Checks that every tool is present before anything is written.
pub fn verify_executables(tools: &[Tool]) -> Result<()> {
    for t in tools {
        t.path()?;
    }
    Ok(())
}

/// Runs a tool with stdin closed and returns its output; a non-zero exit
/// is an error unless its code is in `ok_codes`.
pub fn run(tool: Tool, args: &[&OsStr], ok_codes: &[i32]) -> Result<Output> {
    let path = tool.path()?;
    let argv = std::iter::once(path.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    tracing::debug!("running {argv}");
    let out = Command::new(&path)
        .args(args)
        .stdin(Stdio::null())
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("running {argv}"))?;
    let code = out.status.code();
    if out.status.success() || code.is_some_and(|c| ok_codes.contains(&c)) {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim().replace('\n', "; ");
    bail!("`{argv}` failed ({}): {stderr}", out.status)
}
