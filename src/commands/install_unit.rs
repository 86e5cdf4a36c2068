//! `secretfs install-unit`: write the systemd unit (and a drop-in for
//! each service that must not start without the volume), then enable it.
//! The texts are the ones shipped in `userdata/`, built into the binary,
//! so user data and cloud-config carry settings only, never a unit.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::require_root;
use crate::cli::InstallUnitArgs;
use crate::cmd::{self, Tool};
use crate::error::usage;
use crate::names::{self, under};
use crate::perm;

/// The unit, as shipped (`userdata/secretfs.service`).
pub const UNIT: &str = include_str!("../../userdata/secretfs.service");
/// The swap unit, as shipped (`userdata/secretfs-swap.service`).
pub const SWAP_UNIT: &str = include_str!("../../userdata/secretfs-swap.service");
/// The swap unit's name.
pub const SWAP_UNIT_NAME: &str = "secretfs-swap.service";
/// The drop-in for dependent services (`userdata/requires-secretfs.conf`).
pub const DROP_IN: &str = include_str!("../../userdata/requires-secretfs.conf");
/// The binary path the shipped unit names.
const SHIPPED_BINARY: &str = "/usr/local/bin/secretfs";
/// Where units go.
const UNIT_DIR: &str = "etc/systemd/system";
/// The unit's name.
pub const UNIT_NAME: &str = "secretfs.service";
/// The drop-in's file name inside `UNIT.d/`.
pub const DROP_IN_NAME: &str = "requires-secretfs.conf";
/// `--k8s-disks`: the units of an EKS node that must not start without
/// the volume (nodeadm-run runs setup-local-disks, then starts the
/// other two).
pub const K8S_UNITS: [&str; 3] = [
    "nodeadm-run.service",
    "kubelet.service",
    "containerd.service",
];
/// `--k8s-disks`: the link nodeadm runs, first in systemd's default PATH
/// (`/usr/local/sbin` before `/usr/bin`, where the AMI's own script is).
pub const K8S_LINK: &str = "/usr/local/sbin/setup-local-disks";

/// One file to write.
#[derive(Debug, PartialEq, Eq)]
pub struct UnitFile {
    pub path: PathBuf,
    pub text: String,
}

/// The files for `binary`, the drop-ins' units and the swap unit (when
/// `swap`), under `root`. Refuses a binary others could replace.
pub fn plan(root: &Path, binary: &Path, requires: &[String], swap: bool) -> Result<Vec<UnitFile>> {
    let bin = binary.to_str().filter(|b| !b.contains(char::is_whitespace));
    let Some(bin) = bin.filter(|b| b.starts_with('/')) else {
        return usage(format!(
            "--binary {}: give an absolute path without spaces",
            binary.display()
        ));
    };
    check_binary(root, binary)?;
    let dir = root.join(UNIT_DIR);
    let mut files = vec![UnitFile {
        path: dir.join(UNIT_NAME),
        text: UNIT.replace(SHIPPED_BINARY, bin),
    }];
    if swap {
        files.push(UnitFile {
            path: dir.join(SWAP_UNIT_NAME),
            text: SWAP_UNIT.replace(SHIPPED_BINARY, bin),
        });
    }
    for r in requires {
        let unit = unit_name(r)?;
        files.push(UnitFile {
            path: dir.join(format!("{unit}.d")).join(DROP_IN_NAME),
            text: DROP_IN.to_string(),
        });
    }
    Ok(files)
}

/// Refuses (exit 2) a binary that someone other than root could replace,
/// since the unit runs it as root at every boot: the binary and each
/// directory above it that exists under `root` must pass [`perm::check`]
/// (a missing one is made by whoever may write the nearest existing
/// one), and on the live system so must the file its symlinks lead to
/// and the directories above that.
fn check_binary(root: &Path, binary: &Path) -> Result<()> {
    let mut chains = vec![under(root, binary)];
    if root == Path::new("/") {
        if let Ok(real) = std::fs::canonicalize(binary) {
            chains.push(real);
        }
    }
    for file in &chains {
        for (i, p) in file.ancestors().enumerate() {
            if !p.starts_with(root) {
                break;
            }
            let meta = match std::fs::symlink_metadata(p) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("examining {}", p.display())),
            };
            if meta.file_type().is_symlink() {
                continue;
            }
            let what = if i == 0 { "binary" } else { "directory" };
            if let Err(m) = perm::check(what, p, &meta, "go-w") {
                return usage(format!(
                    "--binary {}: {m} (the unit runs it as root at every boot)",
                    binary.display()
                ));
            }
        }
    }
    Ok(())
}

/// A unit name as systemd takes it; `postgresql` means `postgresql.service`.
fn unit_name(s: &str) -> Result<String> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !ok {
        return usage(format!(
            "--requires {s}: not a unit name (letters, digits and :-_.\\@ only, e.g. postgresql.service)"
        ));
    }
    if s == UNIT_NAME || s == "secretfs" || s == SWAP_UNIT_NAME {
        return usage("--requires secretfs.service: the unit cannot require itself");
    }
    const TYPES: [&str; 11] = [
        ".service",
        ".socket",
        ".mount",
        ".automount",
        ".swap",
        ".target",
        ".path",
        ".timer",
        ".slice",
        ".scope",
        ".device",
    ];
    Ok(if TYPES.iter().any(|t| s.ends_with(t)) {
        s.to_string()
    } else {
        format!("{s}.service")
    })
}

/// `secretfs install-unit`.
pub fn run(args: &InstallUnitArgs) -> Result<()> {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    let live = root == Path::new("/");
    if live {
        require_root("secretfs install-unit")?;
    }
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding this binary's path")?,
    };
    let mut requires = args.requires.clone();
    if args.k8s_disks {
        requires.extend(K8S_UNITS.map(String::from));
    }
    let files = plan(&root, &binary, &requires, args.swap)?;
    if live {
        // Before anything is written, so a machine without systemd is left
        // as it was.
        cmd::verify_executables(&[Tool::Systemctl])?;
    }
    for f in &files {
        write_atomically(&f.path, &f.text)?;
        info!("wrote {}", f.path.display());
    }
    if args.k8s_disks {
        link_setup_local_disks(&root, &binary)?;
    }
    let config = root.join(names::DEFAULT_CONFIG.trim_start_matches('/'));
    if !config.exists() {
        warn!(
            "{} does not exist yet: the unit fails (and services that require it do not start) until it does",
            config.display()
        );
    }
    if !live {
        info!("--root given: not running systemctl; enable {UNIT_NAME} in that system");
        if args.swap {
            info!("and {SWAP_UNIT_NAME}");
        }
        return Ok(());
    }
    cmd::run(Tool::Systemctl, &["daemon-reload".as_ref()], &[])?;
    let mut enable = vec!["enable".as_ref()];
    if args.now {
        enable.push("--now".as_ref());
    }
    if args.swap {
        enable.push(SWAP_UNIT_NAME.as_ref());
    }
    enable.push(UNIT_NAME.as_ref());
    cmd::run(Tool::Systemctl, &enable, &[])?;
    info!(
        "enabled {UNIT_NAME}{}{}",
        if args.swap {
            " and secretfs-swap.service"
        } else {
            ""
        },
        if args.now { " and started it" } else { "" }
    );
    Ok(())
}

/// Makes [`K8S_LINK`] under `root` a link to `binary` (replacing a link,
/// never a file: that would be another tool's script).
fn link_setup_local_disks(root: &Path, binary: &Path) -> Result<()> {
    let link = under(root, Path::new(K8S_LINK));
    match std::fs::symlink_metadata(&link) {
        Ok(m) if !m.file_type().is_symlink() => {
            return crate::error::refused(format!(
                "{} exists and is not a link: secretfs will not replace it (another \
                 setup-local-disks?); move it away and run again",
                link.display()
            ))
        }
        _ => {}
    }
    let dir = link.parent().context("the link has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = link.with_extension("secretfs-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(binary, &tmp)
        .and_then(|_| std::fs::rename(&tmp, &link))
        .with_context(|| format!("linking {} to {}", link.display(), binary.display()))?;
    info!("linked {} to {}", link.display(), binary.display());
    Ok(())
}

/// Writes `text` to `path` (mode 0644) through a temporary file and a
/// rename, so a unit is never seen half-written.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path.parent().context("a unit path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("secretfs-tmp");
    let what = || format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .with_context(what)?;
    f.write_all(text.as_bytes()).with_context(what)?;
    f.sync_all().with_context(what)?;
    std::fs::rename(&tmp, path).with_context(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_a_type_and_bad_ones_are_refused() {
        assert_eq!(unit_name("postgresql").unwrap(), "postgresql.service");
        assert_eq!(unit_name("cassandra.service").unwrap(), "cassandra.service");
        assert_eq!(unit_name("app@1.service").unwrap(), "app@1.service");
        assert_eq!(unit_name("var-lib-x.mount").unwrap(), "var-lib-x.mount");
        for bad in [
            "",
            "../etc/passwd",
            "a/b",
            "a b",
            ".hidden",
            "secretfs",
            "secretfs.service",
        ] {
            assert!(unit_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_binary_others_could_replace_is_refused() {
        use crate::error::{exit_code_of, EXIT_USAGE};
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let bin = r.join("usr/local/bin/secretfs");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        let chmod = |p: &str, mode| {
            std::fs::set_permissions(r.join(p), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        for p in [
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/secretfs",
        ] {
            chmod(p, 0o755);
        }
        let binary = Path::new("/usr/local/bin/secretfs");
        assert!(plan(r, binary, &[], false).is_ok());
        for (p, mode, shown) in [
            ("usr/local/bin/secretfs", 0o775, "0775"),
            ("usr/local/bin", 0o757, "0757"),
            ("usr", 0o777, "0777"),
        ] {
            chmod(p, mode);
            let e = plan(r, binary, &[], false).unwrap_err();
            assert_eq!(exit_code_of(&e), EXIT_USAGE);
            let m = format!("{e:#}");
            assert!(
                m.contains(&r.join(p).display().to_string())
                    && m.contains(shown)
                    && m.contains("chmod go-w"),
                "{m}"
            );
            chmod(p, 0o755);
        }
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(
                &r.join("usr/local"),
                Some(nix::unistd::Uid::from_raw(4242)),
                None,
            )
            .unwrap();
            let m = format!("{:#}", plan(r, binary, &[], false).unwrap_err());
            assert!(m.contains("uid 4242") && m.contains("chown"), "{m}");
        }
    }

    #[test]
    fn the_unit_names_the_binary_and_fails_without_its_config() {
        let files = plan(
            Path::new("/img"),
            Path::new("/usr/bin/secretfs"),
            &["pg".into()],
            true,
        )
        .unwrap();
        assert_eq!(
            files[0].path,
            Path::new("/img/etc/systemd/system/secretfs.service")
        );
        assert!(files[0]
            .text
            .contains("ExecStart=/usr/bin/secretfs up --config"));
        assert!(!files[0].text.contains(SHIPPED_BINARY));
        // A condition would let dependents start without the volume.
        assert!(files[0]
            .text
            .contains("AssertPathExists=/etc/secretfs/secretfs.toml"));
        assert!(!files[0].text.contains("ConditionPathExists"));
        assert_eq!(
            files[1].path,
            Path::new("/img/etc/systemd/system/secretfs-swap.service")
        );
        assert!(files[1]
            .text
            .contains("ExecStart=/usr/bin/secretfs swap --config"));
        assert!(files[1].text.contains("Before=secretfs.service"));
        assert!(!files[1].text.contains(SHIPPED_BINARY));
        assert_eq!(
            files[2].path,
            Path::new("/img/etc/systemd/system/pg.service.d/requires-secretfs.conf")
        );
        assert!(files[2].text.contains("Requires=secretfs.service"));
        assert!(plan(Path::new("/"), Path::new("secretfs"), &[], false).is_err());
    }
}
