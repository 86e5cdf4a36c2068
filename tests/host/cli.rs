//! The binary's contract without root, a VM or AWS: help, exit codes and
//! one-line errors, and that refused or failed runs leave the target alone.

use std::path::Path;
use std::process::{Command, Output};

fn secretfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args(args)
        .env_remove("SECRETFS_LOG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running secretfs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error is one line, prefixed, naming the thing (secretfs's own errors
/// are the last line; clap's usage errors are followed by a hint line).
fn error_line(o: &Output) -> String {
    let s = stderr(o);
    let errors: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("secretfs: error: ") || l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "expected one error line: {s}");
    errors[0].to_string()
}

#[test]
fn help_and_version_exit_0() {
    for args in [
        &["--help"][..],
        &["--version"],
        &["up", "--help"],
        &["seal", "--help"],
        &["down", "--help"],
        &["status", "--help"],
        &["check-key", "--help"],
        &["wait", "--help"],
        &["install-unit", "--help"],
    ] {
        let o = secretfs(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty());
    }
    let help = String::from_utf8(secretfs(&["up", "--help"]).stdout).unwrap();
    for flag in [
        "--wrapped-key",
        "--passphrase-file",
        "--kms-key-id",
        "--encryption-context",
        "--expected-bucket-owner",
        "--region",
        "--endpoint-url",
        "--timeout",
        "--disk",
        "--file",
        "--size",
        "--name",
        "--mount",
        "--mount-options",
        "--force",
        "--wipe",
        "--pbkdf",
        "--dry-run",
        "--json",
        "--config",
    ] {
        assert!(help.contains(flag), "up --help lacks {flag}");
    }
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing_dir = dir.path().join("no/such/dir/v.img");
    let missing_dir = missing_dir.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["up", "--file", "/x.img", "--size", "2X"],
            "unknown unit",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--name", "a/b"],
            "not a path",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--wrapped-key", "s3://"],
            "s3://",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--encryption-context", "novalue"],
            "KEY=VALUE",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--timeout", "soon"],
            "duration",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--expected-bucket-owner", "12"],
            "account id",
        ),
        (vec!["up", "--disk", "/dev/x", "--pbkdf", "md5"], "md5"),
        (vec!["up", "--disk", "/dev/x", "--fs", "btrfs"], "btrfs"),
        (vec!["swap"], "no swap target"),
        (vec!["swap", "--disk", "auto"], "not auto"),
        (
            vec!["swap", "--disk", "/dev/x", "--priority", "40000"],
            "40000",
        ),
        (
            vec!["swap", "--off", "--disk", "/dev/x"],
            "cannot be used with",
        ),
        (
            vec![
                "up",
                "--disk",
                "/dev/x",
                "--ephemeral",
                "--kms-key",
                "alias/k",
            ],
            "cannot be used with",
        ),
        (
            vec![
                "up",
                "--disk",
                "/dev/x",
                "--ephemeral",
                "--passphrase-file",
                "-",
            ],
            "cannot be used with",
        ),
        (
            vec!["up", "--disk", "/dev/x", "--file", "/f"],
            "cannot be used with",
        ),
        (vec!["up"], "no target"),
        (
            vec!["up", "--disk", "/dev/nonexistent-secretfs-test"],
            "does not exist",
        ),
        (vec!["up", "--disk", "/dev/null"], "character device"),
        (
            vec!["up", "--file", missing_dir, "--size", "1G"],
            "directory",
        ),
        (vec!["up", "--file", "/etc", "--size", "1G"], "directory"),
        (
            vec!["up", "--disk", "/dev/x", "--mount", "relative/dir"],
            "absolute",
        ),
        (
            vec![
                "up",
                "--disk",
                "/dev/x",
                "--config",
                "/nonexistent/secretfs.toml",
            ],
            "cannot read config",
        ),
        (vec!["bogus"], "unrecognized subcommand"),
    ] {
        let o = secretfs(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let line = error_line(&o);
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
    }
}

#[test]
fn config_file_errors_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("secretfs.toml");
    std::fs::write(&cfg, "disk = \"/dev/x\"\nsize = \"2X\"\nbogus = 1\n").unwrap();
    let o = secretfs(&["up", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(error_line(&o).contains(cfg.to_str().unwrap()));
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let o = secretfs(&[
        "up",
        "--file",
        img.to_str().unwrap(),
        "--size",
        "64M",
        "--dry-run",
        "--passphrase-file",
        "/nonexistent",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    for step in [
        "create_file",
        "attach_loop",
        "format LUKS2 on the loop device",
        "open the loop device",
        "make ext4 on /dev/mapper/secretfs",
        "mount /dev/mapper/secretfs at /mnt/secretfs",
    ] {
        assert!(out.contains(step), "plan lacks {step}: {out}");
    }
    assert!(!img.exists(), "a dry run created the file");
    // JSON form.
    let o = secretfs(&[
        "up",
        "--file",
        img.to_str().unwrap(),
        "--size",
        "64M",
        "--dry-run",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["plan"]["first_format"], true);
    assert_eq!(v["plan"]["steps"][0]["step"], "create_file");
}

#[test]
fn foreign_file_is_refused_with_exit_3_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("mkfs.ext4 (e2fsprogs) is installed by scripts/setup");
    assert!(Command::new(mkfs)
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap()
        .success());
    let before = std::fs::read(&img).unwrap();
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec![
            "up",
            "--file",
            img.to_str().unwrap(),
            "--passphrase-file",
            "/dev/null",
        ];
        args.extend_from_slice(extra);
        let o = secretfs(&args);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        let line = error_line(&o);
        assert!(line.contains("ext4") && line.contains("--force"), "{line}");
    }
    assert!(
        std::fs::read(&img).unwrap() == before,
        "the refused file was changed"
    );
}

#[test]
fn up_without_device_mapper_fails_with_exit_1_before_writing() {
    // The build machines' kernel has no device-mapper; on one that has it,
    // this test is not meaningful, and says so by failing loudly.
    let misc = std::fs::read_to_string("/proc/misc").unwrap_or_default();
    assert!(
        !misc.contains("device-mapper"),
        "this host has device-mapper; this test is for hosts without it"
    );
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "a passphrase made for this test run\n").unwrap();
    let o = secretfs(&[
        "up",
        "--file",
        img.to_str().unwrap(),
        "--size",
        "64M",
        "--passphrase-file",
        pass.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(error_line(&o).contains("device-mapper is not available"));
    assert!(
        !img.exists(),
        "the file was created although nothing could be opened"
    );
}

#[test]
fn without_a_volume_status_exits_6_and_down_exits_0() {
    // One JSON object (the report), then the one-line reason on stderr.
    let o = secretfs(&["status", "--json"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["open"], false);
    assert_eq!(v["up"], false);
    assert_eq!(v["ok"], false);
    assert!(error_line(&o).contains("not up"), "{}", stderr(&o));
    let o = secretfs(&["status"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("closed"));
    let o = secretfs(&["down", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "already_down");
}

#[test]
fn json_errors_are_one_object_with_the_exit_code() {
    let o = secretfs(&["up", "--disk", "/dev/null", "--json"]);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["exit_code"], 2);
    assert_eq!(v["kind"], "usage");
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let o = secretfs(&["--version"]);
    let shown = String::from_utf8(o.stdout).unwrap();
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running git");
    assert!(head.status.success(), "not a git checkout");
    let head = String::from_utf8(head.stdout).unwrap();
    assert_eq!(
        shown.trim(),
        format!(
            "secretfs {} (commit {})",
            env!("CARGO_PKG_VERSION"),
            head.trim()
        )
    );
}

/// `doc/` is what `secretfs generate` makes from the clap definitions: a
/// flag changed without `secretfs generate doc` fails here.
#[test]
fn committed_man_pages_and_completions_match_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let o = secretfs(&["generate", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("doc");
    let list = |root: &Path| {
        let mut v: Vec<String> = ["man", "completions"]
            .iter()
            .flat_map(|d| std::fs::read_dir(root.join(d)).unwrap())
            .map(|e| {
                let p = e.unwrap().path();
                p.strip_prefix(root).unwrap().display().to_string()
            })
            .collect();
        v.sort();
        v
    };
    let made = list(dir.path());
    assert_eq!(made, list(&doc), "run `secretfs generate doc`");
    for f in &made {
        assert!(
            std::fs::read(dir.path().join(f)).unwrap() == std::fs::read(doc.join(f)).unwrap(),
            "doc/{f} is stale: run `cargo run -- generate doc`"
        );
    }
    for page in [
        "secretfs.1",
        "secretfs-up.1",
        "secretfs-wait.1",
        "secretfs-install-unit.1",
    ] {
        assert!(made.contains(&format!("man/{page}")), "no {page}");
    }
    assert!(
        !made.iter().any(|f| f.contains("generate")),
        "the hidden command got a page"
    );
}

#[test]
fn install_unit_into_a_root_writes_the_unit_and_drop_ins() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let args = [
        "install-unit",
        "--root",
        root,
        "--binary",
        "/usr/bin/secretfs",
        "--requires",
        "postgresql",
        "--requires",
        "cassandra.service",
    ];
    for _ in 0..2 {
        let o = secretfs(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let sys = dir.path().join("etc/systemd/system");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = std::fs::read_to_string(manifest.join("userdata/secretfs.service")).unwrap();
    let unit = std::fs::read_to_string(sys.join("secretfs.service")).unwrap();
    assert_eq!(
        unit,
        shipped.replace("/usr/local/bin/secretfs", "/usr/bin/secretfs")
    );
    let drop_in =
        std::fs::read_to_string(manifest.join("userdata/requires-secretfs.conf")).unwrap();
    for u in ["postgresql.service", "cassandra.service"] {
        let p = sys.join(format!("{u}.d/requires-secretfs.conf"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            drop_in,
            "{}",
            p.display()
        );
    }
    let mut left: Vec<_> = walk(dir.path());
    left.sort();
    assert_eq!(left.len(), 3, "{left:?}");

    let o = secretfs(&[
        "install-unit",
        "--root",
        root,
        "--requires",
        "../../etc/passwd",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        error_line(&o).contains("--requires ../../etc/passwd"),
        "{}",
        stderr(&o)
    );
    let o = secretfs(&["install-unit", "--root", root, "--binary", "secretfs"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(walk(dir.path()).len(), 3, "a refused run wrote files");

    // --swap: the swap unit as shipped, too.
    let o = secretfs(&[
        "install-unit",
        "--root",
        root,
        "--binary",
        "/usr/bin/secretfs",
        "--swap",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shipped = std::fs::read_to_string(manifest.join("userdata/secretfs-swap.service")).unwrap();
    assert_eq!(
        std::fs::read_to_string(sys.join("secretfs-swap.service")).unwrap(),
        shipped.replace("/usr/local/bin/secretfs", "/usr/bin/secretfs")
    );
    assert_eq!(walk(dir.path()).len(), 4);

    // --k8s-disks: the link nodeadm runs, and the three units that must
    // not start without the volume.
    let o = secretfs(&[
        "install-unit",
        "--root",
        root,
        "--binary",
        "/usr/bin/secretfs",
        "--k8s-disks",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let link = dir.path().join("usr/local/sbin/setup-local-disks");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/usr/bin/secretfs")
    );
    for unit in ["nodeadm-run", "kubelet", "containerd"] {
        let d = sys.join(format!("{unit}.service.d/requires-secretfs.conf"));
        assert_eq!(
            std::fs::read_to_string(&d).unwrap(),
            drop_in,
            "{}",
            d.display()
        );
    }
    // Another tool's script there is not replaced.
    std::fs::remove_file(&link).unwrap();
    std::fs::write(&link, "#!/bin/sh\n").unwrap();
    let o = secretfs(&[
        "install-unit",
        "--root",
        root,
        "--binary",
        "/usr/bin/secretfs",
        "--k8s-disks",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(error_line(&o).contains("is not a link"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&link).unwrap(), "#!/bin/sh\n");
}

/// `setup-local-disks`, by the name nodeadm runs: `none` does nothing,
/// unknown strategies are usage errors, and a config that does not mount
/// at DIR/0 (raid0), or not each disk under DIR (mount), is named.
#[test]
fn setup_local_disks_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("setup-local-disks");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_secretfs"), &link).unwrap();
    let run = |args: &[&str]| Command::new(&link).args(args).output().unwrap();
    let o = run(&["none"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["raid5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--no-bind-soci"));
    let config = dir.path().join("secretfs.toml");
    std::fs::write(
        &config,
        "passphrase-file = \"/dev/null\"\ndisk = \"auto\"\n",
    )
    .unwrap();
    let mismatch = |strategy: &str, want: &str| {
        let o = run(&[strategy, "--config", config.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let want = match nix::unistd::geteuid().is_root() {
            true => want,
            false => "root",
        };
        assert!(error_line(&o).contains(want), "{}", stderr(&o));
    };
    mismatch(
        "raid0",
        "mounts the volume at /mnt/secretfs, but nodeadm asks for /mnt/k8s-disks/0: set \
         mount = \"/mnt/k8s-disks/0\" and no each-disk there",
    );
    mismatch(
        "mount",
        "but nodeadm asks for a volume per disk under /mnt/k8s-disks: set \
         mount = \"/mnt/k8s-disks\" and each-disk = true there",
    );
    std::fs::write(
        &config,
        "passphrase-file = \"/dev/null\"\ndisk = \"auto\"\nmount = \"/mnt/k8s-disks/0\"\n\
         each-disk = true\n",
    )
    .unwrap();
    mismatch(
        "raid0",
        "mounts the volume at /mnt/k8s-disks/0 (each-disk: a volume per disk), but nodeadm asks \
         for /mnt/k8s-disks/0",
    );
}

fn walk(d: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn wait_without_a_volume_gives_up_at_the_timeout_with_exit_6() {
    let start = std::time::Instant::now();
    let o = secretfs(&["wait", "--name", "secretfs-never", "--timeout", "1s"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(
        line.contains("waited 1s for volume secretfs-never"),
        "{line}"
    );
    assert!(line.contains("not up: "), "{line}");
    assert!(start.elapsed() >= std::time::Duration::from_secs(1));
    let o = secretfs(&["wait", "--timeout", "soon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn shred_without_yes_and_without_a_terminal_refuses_with_exit_2() {
    let o = Command::new(env!("CARGO_BIN_EXE_secretfs"))
        .args(["shred", "--name", "secretfs-never"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let line = error_line(&o);
    assert!(
        line.contains("--yes") && line.contains("secretfs-never"),
        "{line}"
    );
}

#[test]
fn the_binary_stays_on_the_supported_symbol_floor() {
    // scripts/check-floor passes on the built binary, and fails, naming the
    // symbol version, when a floor is set one step below what it needs.
    let check = |env: &[(&str, &str)]| {
        let mut c = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/check-floor"));
        c.arg(env!("CARGO_BIN_EXE_secretfs"));
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("running scripts/check-floor")
    };
    let ok = check(&[]);
    assert!(
        ok.status.success(),
        "{}{}",
        String::from_utf8_lossy(&ok.stdout),
        stderr(&ok)
    );
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        out.contains("GLIBC: newest needed") && out.contains("libcryptsetup.so.12"),
        "{out}"
    );
    for (var, floor, needs) in [
        ("SECRETFS_FLOOR_GLIBC", "2.33", "needs GLIBC_2.34"),
        ("SECRETFS_FLOOR_CRYPTSETUP", "2.3", "needs CRYPTSETUP_2.4"),
    ] {
        let low = check(&[(var, floor)]);
        assert_eq!(
            low.status.code(),
            Some(1),
            "{var}={floor}: {}",
            stderr(&low)
        );
        assert!(
            stderr(&low).contains(needs),
            "{var}={floor}: {}",
            stderr(&low)
        );
    }
}

/// What `userdata/` reads from S3 and decrypts, and with which context, is
/// what `examples/iam-policy.json` grants and nothing more (the key
/// policies are checked in `policy.rs`). moto does not enforce IAM or key
/// policies, so this is checked on the files.
#[test]
fn the_example_policies_grant_what_the_shipped_user_data_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    let json = |p: &str| -> serde_json::Value { serde_json::from_str(&read(p)).unwrap() };
    let arn = |uri: &str| format!("arn:aws:s3:::{}", uri.trim_start_matches("s3://"));

    // user-data.sh: its settings lines.
    let script = read("userdata/user-data.sh");
    let setting = |name: &str| -> String {
        let line = script
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("user-data.sh has no {name}= line"));
        line[name.len() + 1..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let mut from_script = vec![
        arn(&setting("SECRETFS_BINARY")),
        arn(&setting("WRAPPED_KEY")),
    ];
    from_script.sort();
    let owner = setting("BUCKET_OWNER");

    // cloud-config.yaml: the download's bucket and key, the config's key.
    let cc = read("userdata/cloud-config.yaml");
    let word_after = |text: &str, marker: &str| -> String {
        let at = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}")) + marker.len();
        text[at..]
            .split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
            .find(|w| !w.is_empty())
            .unwrap()
            .to_owned()
    };
    let mut from_cc = vec![
        format!(
            "arn:aws:s3:::{}/{}",
            word_after(&cc, "--bucket "),
            word_after(&cc, "--key ")
        ),
        arn(&word_after(&cc, "wrapped-key = ")),
    ];
    from_cc.sort();
    assert_eq!(
        from_cc, from_script,
        "cloud-config.yaml and user-data.sh read other objects"
    );
    // k8s-user-data.sh: the same settings lines, so the same policies.
    let k8s = read("userdata/k8s-user-data.sh");
    let settings_of = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                [
                    "SECRETFS_BINARY=",
                    "SECRETFS_SHA256=",
                    "WRAPPED_KEY=",
                    "KMS_KEY_ID=",
                    "BUCKET_OWNER=",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(settings_of(&script).len(), 5);
    assert_eq!(
        settings_of(&k8s),
        settings_of(&script),
        "k8s-user-data.sh reads other objects than user-data.sh"
    );
    for text in [&script, &cc, &k8s] {
        assert!(
            text.contains("encryption-context = { purpose = \"secretfs\" }"),
            "the user data's encryption context changed: update examples/iam-policy.json"
        );
    }

    let iam = json("examples/iam-policy.json");
    let statements = iam["Statement"].as_array().unwrap();
    let mut granted: Vec<String> = statements
        .iter()
        .map(|s| {
            s["Action"]
                .as_str()
                .expect("one action per statement")
                .to_owned()
        })
        .collect();
    granted.sort();
    assert_eq!(
        granted,
        ["kms:Decrypt", "s3:GetObject"],
        "the role may do exactly these"
    );
    let get = statements
        .iter()
        .find(|s| s["Action"] == "s3:GetObject")
        .unwrap();
    let mut objects: Vec<String> = get["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    objects.sort();
    assert_eq!(
        objects, from_script,
        "s3:GetObject must name exactly the objects the user data reads"
    );
    assert_eq!(
        get["Condition"]["StringEquals"]["s3:ResourceAccount"],
        owner.as_str()
    );
    let decrypt = statements
        .iter()
        .find(|s| s["Action"] == "kms:Decrypt")
        .unwrap();
    assert_eq!(
        decrypt["Condition"]["StringEquals"]["kms:EncryptionContext:purpose"],
        "secretfs"
    );
    assert!(
        decrypt["Resource"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:kms:"),
        "kms:Decrypt on one key, not *"
    );
}

/// `--json` prints one JSON object, also when a dry run is refused: the
/// report (with "refused"), not a second object for the error.
#[test]
fn a_refused_dry_run_prints_one_json_object() {
    let o = secretfs(&[
        "up",
        "--dry-run",
        "--json",
        "--passphrase-file",
        "/dev/null",
        "--file",
        "/nonexistent-secretfs-dir/v.img",
        "--size",
        "64M",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["dry_run"], true, "{v}");
    assert!(
        v["refused"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );
}
