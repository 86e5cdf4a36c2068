//! Real-guest tier: a Debian 12 image with its own systemd, cloud-init, AWS
//! CLI and kernel (tests/guest/build-image.sh), booted under QEMU as an EC2
//! instance would be: the root disk, a cloud-init NoCloud seed (a `CIDATA`
//! disk holding the user data and the instance id), NVMe disks standing in
//! for instance store, and the fenced network of [`vm::fenced_network`]
//! (IMDSv2 at 169.254.169.254, S3 and KMS at 169.254.170.100:4566, nothing
//! else).
//!
//! An [`Instance`] is one EC2 instance: its root disk is a qcow2 overlay on
//! the cached base image that lives as long as the instance, as an EBS root
//! volume does. [`Instance::boot`] is one boot (QEMU start to power-off), so
//! a second call is a reboot; [`Instance::stop_start`] swaps in blank
//! instance-store disks, as a stop/start does. The instance id stays, so
//! cloud-init runs the user data on the first boot only.
//!
//! What the test sees of a boot: the image's `secretfs-test-observe.service`
//! waits for the boot to finish, runs the scenario script (passed with QEMU
//! fw_cfg, after tests/vm/prelude.sh) with its output on the second serial
//! port, and powers off. The script prints `CHECK` lines (prelude) and
//! `FACT name=value` lines for the test to compare across boots. Stand-in
//! environment variables are passed the same way (fw_cfg) and set for all
//! units by `secretfs-test-early.service` before cloud-init starts.
//!
//! The base image is built on first use into `.cache/guest/<hash>/`,
//! keyed by the builder's files, and reused by later runs.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::aws::{hex, manifest_dir};
use super::vm::{self, QemuChild, VmLock};

/// The base image's files (tests/guest/build-image.sh).
pub struct Image {
    pub root: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Guest RAM (PostgreSQL, cloud-init and the AWS CLI's Python).
const MEM_MIB: u32 = 2048;
/// One boot, first-boot user data included; QEMU is killed after it.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Instance-store stand-ins: QEMU's NVMe controllers report this model,
/// passed to secretfs through its test seam (SECRETFS_INSTANCE_STORE_MODEL).
pub const QEMU_NVME_MODEL: &str = "QEMU NVMe Ctrl";

/// The builder's files: the image is rebuilt when one of them changes.
const BUILDER_FILES: &[&str] = &[
    "build-image.sh",
    "customize.sh",
    "hook",
    "aws",
    "secretfs-test-early.service",
    "secretfs-test-observe.service",
];

/// The cached base image, built when missing (about 3 minutes), one
/// builder at a time (the build lock).
pub fn image() -> Image {
    let src = manifest_dir().join("tests/guest");
    // The first 16 hex digits of the SHA-256 of the files, concatenated in
    // this order (`cat FILES | sha256sum` in tests/guest/).
    let mut hasher = sha2::Sha256::new();
    for f in BUILDER_FILES {
        let p = src.join(f);
        hasher.update(fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())));
    }
    let cache = manifest_dir().join(".cache/guest");
    let dir = cache.join(&hex(&hasher.finalize())[..16]);
    let image = Image {
        root: dir.join("root.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    // build-image.sh writes kernel-version last, after moving the image
    // into place: a test that sees it may boot the image.
    let built = dir.join("kernel-version");
    if built.is_file() {
        return image;
    }
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("creating {}: {e}", cache.display()));
    let _lock = VmLock::build(&vm::vmtest_dir(), "guest-image");
    if built.is_file() {
        return image;
    }
    // Older images (other builder files) go first: each is ~1.5 GiB.
    if let Ok(entries) = fs::read_dir(&cache) {
        for e in entries.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    eprintln!("guest: building the Debian 12 image into {}", dir.display());
    let started = Instant::now();
    let builder = src.join("build-image.sh");
    let out = Command::new("bash")
        .arg(&builder)
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", builder.display()));
    assert!(
        out.status.success() && image.root.is_file(),
        "{} failed ({}):\n{}{}",
        builder.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("guest: image built in {:.0?}", started.elapsed());
    image
}

/// One EC2 instance: root disk, seed, instance-store disks.
pub struct Instance {
    pub name: String,
    pub dir: PathBuf,
    /// The root disk (qcow2 overlay over the base image).
    pub root: PathBuf,
    /// The instance-store disks, in attachment order.
    pub disks: Vec<PathBuf>,
    disk_bytes: u64,
    image: Image,
    boots: u32,
    generation: u32,
}

/// One boot's outcome.
pub struct Boot {
    pub label: String,
    /// The scenario's output (second serial port).
    pub output: String,
    /// The serial console (kernel and systemd).
    pub console: String,
    pub console_log: PathBuf,
    /// From `SECRETFS-GUEST-EXIT`; `None` when the scenario never ended.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// QEMU start to exit.
    pub elapsed: Duration,
}

impl Instance {
    /// A new instance in `<target>/vmtest/<name>/` whose first boot runs
    /// `user_data` (cloud-init NoCloud), with `disks` blank instance-store
    /// disks of `disk_bytes` each.
    pub fn launch(name: &str, user_data: &str, disks: usize, disk_bytes: u64) -> Instance {
        let image = image();
        let dir = vm::work_dir(name);
        let root = dir.join("root.qcow2");
        run_tool(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&image.root)
                .arg(&root),
        );
        // The NoCloud seed: what EC2's user data and instance id are here.
        let seed_dir = dir.join("seed");
        fs::create_dir_all(&seed_dir).unwrap();
        fs::write(seed_dir.join("user-data"), user_data).unwrap();
        fs::write(
            seed_dir.join("meta-data"),
            format!(
                "instance-id: i-0{}\nlocal-hostname: {name}\n",
                &hex(&sha2::Sha256::digest(name.as_bytes()))[..16]
            ),
        )
        .unwrap();
        let seed = dir.join("seed.img");
        run_tool(
            Command::new("mkfs.vfat")
                .args(["-n", "CIDATA", "-C"])
                .arg(&seed)
                .arg("2048"),
        );
        run_tool(
            Command::new("mcopy")
                .arg("-i")
                .arg(&seed)
                .arg(seed_dir.join("user-data"))
                .arg(seed_dir.join("meta-data"))
                .arg("::"),
        );
        let mut instance = Instance {
            name: name.to_owned(),
            dir,
            root,
            disks: Vec::new(),
            disk_bytes,
            image,
            boots: 0,
            generation: 0,
        };
        instance.blank_disks(disks);
        instance
    }

    /// Fresh blank instance-store disks (a new generation of files).
    fn blank_disks(&mut self, n: usize) {
        self.generation += 1;
        self.disks = (0..n)
            .map(|i| {
                let p = self.dir.join(format!("nvme{i}-gen{}.img", self.generation));
                vm::sparse_file(&p, self.disk_bytes);
                p
            })
            .collect();
    }

    /// Stop/start: the root disk stays, the instance store comes back blank.
    pub fn stop_start(&mut self) {
        let n = self.disks.len();
        self.blank_disks(n);
    }

    /// Boots the instance and returns when it powered off (or at the
    /// timeout). `env` is the stand-in environment for every unit;
    /// `scenario` the script the observer runs once the boot is over.
    pub fn boot(
        &mut self,
        label: &str,
        env: &[(&str, &str)],
        scenario: &str,
        imds_port: u16,
        endpoint_port: u16,
    ) -> Boot {
        self.boots += 1;
        let tag = format!("{:02}-{label}", self.boots);
        let env_file = self.dir.join(format!("{tag}.env"));
        let mut env_text = String::new();
        for (k, v) in env {
            vm::assert_env_name(k);
            assert!(!v.contains('\n'), "{k}: no newlines in a stand-in value");
            env_text.push_str(&format!("{k}={v}\n"));
        }
        fs::write(&env_file, env_text).unwrap();
        let script_file = self.dir.join(format!("{tag}.sh"));
        fs::write(&script_file, format!("{}\n{scenario}\n", vm::PRELUDE)).unwrap();
        let console_log = self.dir.join(format!("{tag}.console.log"));
        let output_log = self.dir.join(format!("{tag}.output.log"));
        let qemu_log = self.dir.join(format!("{tag}.qemu.log"));
        let path = |p: &Path| vm::qemu_opt(p.to_str().expect("UTF-8 path"));

        let mut args = vm::qemu_boot_args(
            "pc",
            vm::DEFAULT_CPU,
            MEM_MIB,
            &self.image.kernel,
            &self.image.initrd,
            "root=/dev/vda rw console=ttyS0 panic=-1 mitigations=off",
        );
        args.extend([
            "-serial".into(),
            format!("file:{}", path(&console_log)),
            "-serial".into(),
            format!("file:{}", path(&output_log)),
            "-device".into(),
            "virtio-rng-pci".into(),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                path(&self.root)
            ),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw,readonly=on",
                path(&self.dir.join("seed.img"))
            ),
            "-fw_cfg".into(),
            format!("name=opt/secretfs/environment,file={}", path(&env_file)),
            "-fw_cfg".into(),
            format!("name=opt/secretfs/scenario,file={}", path(&script_file)),
        ]);
        args.extend(vm::fenced_network(Some(imds_port), Some(endpoint_port)));
        for (i, disk) in self.disks.iter().enumerate() {
            args.extend([
                "-drive".into(),
                format!(
                    "file={},if=none,id=nvme{i},format=raw,cache=unsafe",
                    path(disk)
                ),
                "-device".into(),
                format!(
                    "nvme,drive=nvme{i},serial=IS{}G{}N{i},logical_block_size=512,physical_block_size=4096",
                    self.generation, self.boots
                ),
            ]);
        }
        fs::write(
            self.dir.join(format!("{tag}.qemu.args")),
            args.join("\n") + "\n",
        )
        .ok();

        let _slot = VmLock::slot(&vm::vmtest_dir());
        let started = Instant::now();
        let qemu_stderr = File::create(&qemu_log).unwrap();
        let mut child = QemuChild(
            Command::new(vm::QEMU)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(qemu_stderr)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", vm::QEMU)),
        );
        let status = child.wait_until(started + BOOT_TIMEOUT);
        let timed_out = status.is_none();
        let elapsed = started.elapsed();
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default().replace('\r', "");
        let output = read(&output_log);
        let console = read(&console_log);
        let exit_code =
            vm::last_marker(&output, "SECRETFS-GUEST-EXIT ").and_then(|s| s.parse().ok());
        if let Some(status) = status {
            assert!(
                status.success() || exit_code.is_some(),
                "{} failed ({status}): {}",
                vm::QEMU,
                read(&qemu_log)
            );
        }
        let boot = Boot {
            label: format!("{} {tag}", self.name),
            output,
            console,
            console_log,
            exit_code,
            timed_out,
            elapsed,
        };
        vm::record_boot("guest", &boot.label, elapsed, &boot.output);
        eprintln!(
            "[guest {}] exit {:?}, {:.1}s{}",
            boot.label,
            boot.exit_code,
            elapsed.as_secs_f64(),
            if timed_out { " (timed out)" } else { "" }
        );
        boot
    }
}

impl Boot {
    /// The `FACT name=value` lines (the last value of each name).
    pub fn facts(&self) -> BTreeMap<String, String> {
        self.output
            .lines()
            .filter_map(|l| l.strip_prefix("FACT "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect()
    }

    /// One fact; panics (with the output) when it was not printed.
    pub fn fact(&self, name: &str) -> String {
        self.facts()
            .remove(name)
            .unwrap_or_else(|| panic!("{}: no FACT {name}\n{}", self.label, self.tails()))
    }

    /// Asserts the scenario ran to its end with exit 0, no check failed,
    /// and every check in `expected` passed.
    pub fn assert_checks(&self, expected: &[&str]) {
        let problems = vm::check_problems(
            &self.output,
            self.exit_code,
            self.timed_out.then_some(self.elapsed),
            expected,
        );
        assert!(
            problems.is_empty(),
            "{}:\n  {}\n{}",
            self.label,
            problems.join("\n  "),
            self.tails()
        );
    }

    /// The ends of the scenario output and of the console.
    pub fn tails(&self) -> String {
        let tail = |text: &str, n: usize| {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "--- scenario output (last 80 lines) ---\n{}\n--- console (last 40 lines; all in {}) ---\n{}\n---",
            tail(&self.output, 80),
            self.console_log.display(),
            tail(&self.console, 40)
        )
    }
}

fn run_tool(cmd: &mut Command) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
