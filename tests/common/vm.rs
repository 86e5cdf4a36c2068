//! Real-kernel tests: boots a Debian kernel under QEMU (software emulation,
//! no KVM) and runs a bash script in it, as root, with device-mapper,
//! dm-crypt, loop, ext4 and NVMe available.
//!
//! The guest mounts the host's root filesystem read-only over virtio-9p and
//! chroots into it, so the script runs the host's binaries unchanged: the
//! freshly built secretfs (`$SECRETFS`, the same absolute path as on the
//! host), cryptsetup, mkfs.ext4, python3, curl. Writable: tmpfs on /run,
//! /mnt and /root; /tmp and /var/tmp show the host's files under a RAM
//! overlay (writes stay in the guest); and `$VM_OUT` (`/run/out`), a share
//! of the host directory [`VmRun::out_dir`]. Files for the guest go under
//! [`work_dir`] (`<target>/vmtest/<case>/`).
//!
//! Disks are raw image files (see [`sparse_file`]): virtio disks appear as
//! `/dev/vda`, `/dev/vdb`, ... and NVMe disks as `/dev/nvme0n1`,
//! `/dev/nvme1n1`, ..., each in the order given.
//!
//! The network exists only when a port is given, and is fenced: the guest
//! has 169.254.0.15/16 and can reach exactly two addresses, both forwarded to
//! the host's 127.0.0.1:
//! - `http://169.254.169.254` (IMDS) -> `127.0.0.1:<imds_port>`
//! - `http://169.254.170.100:4566` (`$VM_ENDPOINT`) -> `127.0.0.1:<endpoint_port>`
//!
//! moto serves KMS, S3 and IMDSv2 on one port, so both may point at it. The
//! script gets no AWS_* variables.
//!
//! The script body gets `tests/vm/prelude.sh` prepended, which defines
//! `check NAME CMD...` and `check_fails NAME CMD...` (printing
//! `CHECK ok NAME` / `CHECK FAIL NAME`) and makes the script exit non-zero
//! when any check failed. Assert with [`VmRun::assert_checks`].
//!
//! At most [`vm_slots`] VMs run at once (lock files in `<target>/vmtest/`,
//! across threads and test binaries; the tiers run with `--test-threads`
//! equal to it). The console streams to the test's
//! stderr (shown when the test fails, or with `--nocapture`) and to
//! `<case dir>/console.log`.
//!
//! [`VmSpec::arch`] `Aarch64` boots Debian's arm64 kernel instead, over an
//! arm64 root in place of the host's (see [`Arch`]).
//!
//! Needs what `scripts/setup` installs: qemu-system-x86_64, busybox-static,
//! cpio, kmod, and the guest kernel `.cache/vm/kernel/` links to. The initramfs
//! (tests/vm/build-initramfs.sh) and the uncompressed kernel
//! (tests/vm/extract-vmlinux.sh) are built on first use and cached in
//! `<target>/vmtest/`. `$SECRETFS_VM_CPU` overrides the emulated CPU model;
//! `$SECRETFS_VM_BINARY` runs the guest scripts against another build of
//! secretfs (an older commit's, to see a test fail against the bug it
//! guards).

use std::collections::hash_map::DefaultHasher;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The script prelude (`check`, `check_fails`).
pub const PRELUDE: &str = include_str!("../vm/prelude.sh");

/// Guest addresses; see the module documentation.
pub const IMDS_URL: &str = "http://169.254.169.254";
pub const ENDPOINT_URL: &str = "http://169.254.170.100:4566";
/// The writable share, inside the guest.
pub const GUEST_OUT: &str = "/run/out";

pub const QEMU: &str = "qemu-system-x86_64";
/// The emulated CPU (`$SECRETFS_VM_CPU` overrides): has AES-NI and PCLMUL,
/// and boots faster under TCG than `max`.
pub const DEFAULT_CPU: &str = "Westmere";
pub const BUSYBOX: &str = "/bin/busybox";

/// The guest's architecture. x86_64 runs the host's own root (and the
/// freshly built binary); aarch64 boots Debian's arm64 kernel under
/// `qemu-system-aarch64` (machine `virt`, CPU cortex-a57) and shares the
/// arm64 root that scripts/setup extracts into `.cache/vm/arm64/root/`
/// instead of the host's; the script and the binary ([`VmSpec::binary`],
/// required) then go through the output share (`/run/out/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    fn qemu(self) -> &'static str {
        match self {
            Arch::X86_64 => QEMU,
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }
}

/// How a disk image is attached.
#[derive(Clone, Debug)]
pub enum DiskKind {
    /// virtio-blk: `/dev/vda`, `/dev/vdb`, ...
    Virtio,
    /// An NVMe controller with one namespace (an instance-store stand-in):
    /// `/dev/nvme0n1`, ...; `serial` shows in `/sys/block/nvmeXn1/device/serial`.
    /// Logical blocks of 512 bytes, physical of 4096.
    Nvme { serial: String },
}

/// A raw disk image given to the guest (writes go to the file).
#[derive(Clone, Debug)]
pub struct Disk {
    pub path: PathBuf,
    pub kind: DiskKind,
    /// Attached read-only (QEMU `readonly=on`): the guest kernel marks the
    /// disk read-only (`/sys/block/*/ro` is 1) and the device refuses
    /// writes.
    pub read_only: bool,
}

impl Disk {
    pub fn virtio(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            kind: DiskKind::Virtio,
            read_only: false,
        }
    }

    pub fn nvme(path: impl Into<PathBuf>, serial: &str) -> Disk {
        Disk {
            path: path.into(),
            kind: DiskKind::Nvme {
                serial: serial.to_owned(),
            },
            read_only: false,
        }
    }

    /// The same disk, attached read-only.
    pub fn read_only(self) -> Disk {
        Disk {
            read_only: true,
            ..self
        }
    }
}

/// What to run. Start from [`VmSpec::new`] and set fields.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// The case name: the case directory is `<target>/vmtest/<name>/`.
    pub name: String,
    /// The bash script body (the prelude is prepended).
    pub script: String,
    /// Disks, attached in this order (virtio and NVMe numbered separately).
    pub disks: Vec<Disk>,
    /// Host port (on 127.0.0.1) behind `169.254.170.100:4566`.
    pub endpoint_port: Option<u16>,
    /// Host port (on 127.0.0.1) behind `169.254.169.254:80`.
    pub imds_port: Option<u16>,
    /// Extra environment for the script (exported after the prelude).
    pub env: Vec<(String, String)>,
    /// Guest RAM; the initramfs and every tmpfs live in it.
    pub mem_mib: u32,
    /// The whole run, boot included; QEMU is killed when it is exceeded.
    pub timeout: Duration,
    /// Kernel modules the guest must not have (e.g. `dm-crypt`): /init
    /// does not load them from the initramfs, and makes `modprobe` of
    /// them fail in the chroot (an `install NAME /bin/false` rule in
    /// `/run/modprobe.d`, plus `modprobe.blacklist=` on the kernel command
    /// line), so neither a program nor the kernel's autoloader can load
    /// them. Names as modprobe takes them; `-` and `_` are the same.
    pub skip_modules: Vec<String>,
    pub arch: Arch,
    /// The secretfs binary `$SECRETFS` names (default: this build, or
    /// `$SECRETFS_VM_BINARY`); required for aarch64.
    pub binary: Option<PathBuf>,
}

impl VmSpec {
    /// No disks, no network, 1536 MiB, a 180 s timeout.
    pub fn new(name: &str, script: &str) -> VmSpec {
        VmSpec {
            name: name.to_owned(),
            script: script.to_owned(),
            disks: Vec::new(),
            endpoint_port: None,
            imds_port: None,
            env: Vec::new(),
            mem_mib: 1536,
            timeout: Duration::from_secs(180),
            skip_modules: Vec::new(),
            arch: Arch::X86_64,
            binary: None,
        }
    }
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct VmRun {
    /// The serial console (carriage returns removed).
    pub console: String,
    /// The script's exit status, from the `SECRETFS-VM-EXIT` line; `None`
    /// when the guest never got there (timeout, crash).
    pub exit_code: Option<i32>,
    /// True when QEMU was killed at the timeout.
    pub timed_out: bool,
    /// Host directory shared with the guest as `$VM_OUT` (fresh per run).
    pub out_dir: PathBuf,
    /// `<case dir>/console.log`.
    pub console_log: PathBuf,
    /// From starting QEMU until it exited.
    pub elapsed: Duration,
    /// From starting QEMU until the script started (firmware, kernel,
    /// /init); `None` when it never started.
    pub boot_time: Option<Duration>,
}

impl VmRun {
    /// The `CHECK` lines, in order: (name, passed).
    pub fn checks(&self) -> Vec<(String, bool)> {
        parse_checks(&self.console)
    }

    /// Whether `CHECK ok NAME` was printed and `CHECK FAIL NAME` was not.
    pub fn passed(&self, name: &str) -> bool {
        let checks = self.checks();
        checks.iter().any(|(n, ok)| n == name && *ok)
            && !checks.iter().any(|(n, ok)| n == name && !*ok)
    }

    /// Asserts the script exited 0, no check failed, and every check in
    /// `expected` passed. The panic message names what is wrong and ends with
    /// the tail of the console.
    pub fn assert_checks(&self, expected: &[&str]) {
        let problems = check_problems(
            &self.console,
            self.exit_code,
            self.timed_out.then_some(self.elapsed),
            expected,
        );
        if !problems.is_empty() {
            panic!(
                "VM run failed:\n  {}\n{}",
                problems.join("\n  "),
                self.console_tail(60)
            );
        }
    }

    /// The last `lines` console lines, with a pointer to the full log.
    pub fn console_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.console.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- console (last {} of {} lines; all in {}) ---\n{}\n--- end of console ---",
            all.len() - start,
            all.len(),
            self.console_log.display(),
            all[start..].join("\n")
        )
    }
}

/// The `CHECK ok NAME` / `CHECK FAIL NAME` lines of `text` (what
/// tests/vm/prelude.sh prints), in order: (name, passed).
pub fn parse_checks(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("CHECK ")?;
            let (passed, rest) = if let Some(r) = rest.strip_prefix("ok ") {
                (true, r)
            } else {
                (false, rest.strip_prefix("FAIL ")?)
            };
            let name = rest.split_whitespace().next()?;
            Some((name.to_owned(), passed))
        })
        .collect()
}

/// The names of the `check NAME ...` lines of a guest script, in order:
/// the checks it expects to pass.
pub fn check_names(script: &str) -> impl Iterator<Item = String> + '_ {
    script
        .lines()
        .filter_map(|l| l.strip_prefix("check "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
}

/// The rest of the last line of `text` that starts with `prefix`, trimmed
/// (the guests' `SECRETFS-...` marker lines).
pub fn last_marker(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .next_back()
        .map(|s| s.trim().to_owned())
}

/// Panics unless `name` can be an environment variable of a guest script.
pub fn assert_env_name(name: &str) {
    assert!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "bad environment variable name {name:?}"
    );
}

/// What is wrong with a guest script's run, one line each: a timeout
/// (`timed_out_after`), an exit code other than 0, every `CHECK FAIL`, and
/// every name of `expected` without its `CHECK ok`. Empty when all is well.
pub fn check_problems(
    output: &str,
    exit_code: Option<i32>,
    timed_out_after: Option<Duration>,
    expected: &[&str],
) -> Vec<String> {
    let checks = parse_checks(output);
    let mut problems = Vec::new();
    if let Some(after) = timed_out_after {
        problems.push(format!("timed out after {after:?}"));
    }
    if exit_code != Some(0) {
        problems.push(format!("script exit code {exit_code:?}, expected Some(0)"));
    }
    for (name, ok) in &checks {
        if !ok {
            problems.push(format!("CHECK FAIL {name}"));
        }
    }
    for name in expected {
        if !checks.iter().any(|(n, ok)| n == name && *ok) {
            problems.push(format!("missing CHECK ok {name}"));
        }
    }
    problems
}

/// Appends one line to `<target>/vmtest/boots.tsv` for every guest boot:
/// tier, test, boot name, seconds from QEMU start to exit, and the
/// `CHECK` lines passed and failed. `scripts/test` empties it at its start
/// and prints it as its per-boot table at the end.
pub fn record_boot(tier: &str, name: &str, elapsed: Duration, text: &str) {
    let checks = parse_checks(text);
    let failed = checks.iter().filter(|(_, ok)| !ok).count();
    // libtest runs each test on a thread named after it.
    let test = thread::current().name().unwrap_or("?").to_owned();
    let line = format!(
        "{tier}\t{test}\t{name}\t{:.1}\t{}\t{failed}\n",
        elapsed.as_secs_f64(),
        checks.len() - failed
    );
    let path = vmtest_dir().join("boots.tsv");
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("recording the boot in {}: {e}", path.display());
    }
}

/// `<target>/vmtest`: where disk images, scripts and outputs of VM runs live.
pub fn vmtest_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is <target dir>/tmp.
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target = target_tmp
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(target_tmp);
    // The guest sees the host's /tmp read-only under a RAM overlay, so
    // this works wherever the target directory is.
    let dir = target.join("vmtest");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A fresh (emptied) case directory `<target>/vmtest/<case>/`, visible in
/// the guest at the same path. Put disk images and files for the guest here.
pub fn work_dir(case: &str) -> PathBuf {
    let dir = case_dir(case);
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// `<target>/vmtest/<case>` (not created).
fn case_dir(case: &str) -> PathBuf {
    assert!(
        !case.is_empty()
            && case
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !case.starts_with('.'),
        "case name {case:?}: use [A-Za-z0-9._-]"
    );
    vmtest_dir().join(case)
}

/// Creates (or truncates) a sparse file of `bytes` bytes.
pub fn sparse_file(path: &Path, bytes: u64) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
    }
    File::create(path)
        .and_then(|f| f.set_len(bytes))
        .unwrap_or_else(|e| panic!("creating sparse file {}: {e}", path.display()));
}

/// Single-quotes `s` for bash.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest kernel: (version, unpacked package root). For aarch64 the
/// root is the whole arm64 root (kernel package included).
fn kernel(arch: Arch) -> (String, PathBuf) {
    let link = super::aws::manifest_dir().join(match arch {
        Arch::X86_64 => ".cache/vm/kernel",
        Arch::Aarch64 => ".cache/vm/arm64",
    });
    // A link into the machine's cache (scripts/setup): the guest is given
    // real paths, since it resolves links inside its own root.
    let kdir = fs::canonicalize(&link).unwrap_or_else(|e| {
        panic!(
            "no guest kernel ({}: {e}): run scripts/setup",
            link.display()
        )
    });
    let version = fs::read_to_string(kdir.join("version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|e| {
            panic!(
                "no guest kernel ({}: {e}): run scripts/setup",
                kdir.join("version").display()
            )
        });
    let root = kdir.join("root");
    let vmlinuz = root.join(format!("boot/vmlinuz-{version}"));
    let moddep = root.join(format!("lib/modules/{version}/modules.dep"));
    for f in [&vmlinuz, &moddep] {
        assert!(
            f.is_file(),
            "guest kernel incomplete ({} missing): run scripts/setup",
            f.display()
        );
    }
    (version, root)
}

fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn preflight(arch: Arch) {
    let qemu = arch.qemu();
    assert!(in_path(qemu), "{qemu} not found: run scripts/setup");
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} not found: run scripts/setup (busybox-static)"
    );
    for tool in ["cpio", "modprobe", "gzip"] {
        assert!(
            in_path(tool)
                || Path::new("/usr/sbin").join(tool).is_file()
                || Path::new("/sbin").join(tool).is_file(),
            "{tool} not found: run scripts/setup"
        );
    }
}

/// How many guests may run at once (`$SECRETFS_VM_SLOTS`, default 1).
/// Two at once on a 2-core machine did not pay: measured, each boot took
/// 1.0 to 2.8 times as long (2 vCPUs each; see doc/testing.md), and with 1
/// vCPU each beside a release build a boot ran past its timeout.
pub fn vm_slots() -> usize {
    env_count("SECRETFS_VM_SLOTS").unwrap_or(1)
}

/// A count of one or more from the environment variable `name`.
fn env_count(name: &str) -> Option<usize> {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
}

/// vCPUs per guest (`$SECRETFS_VM_CPUS`): by default the host's cores
/// shared among the [`vm_slots`], at least one, so that the guests that
/// run at once never ask for more vCPUs than the host has cores (a guest
/// kernel's vCPU that spins on a lock whose holder's host thread is not
/// running burns the core the holder needs).
pub fn vm_cpus() -> usize {
    env_count("SECRETFS_VM_CPUS").unwrap_or_else(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        (cores / vm_slots()).max(1)
    })
}

/// A held file lock in `<target>/vmtest/` (across threads and test
/// binaries); released when dropped.
pub struct VmLock(File);

impl VmLock {
    fn open(path: &Path) -> File {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
    }

    /// The lock for building one thing guests share (`what`: the
    /// initramfs and kernel image, the real-guest image): one builder of
    /// it at a time, while guests of the others run.
    pub fn build(dir: &Path, what: &str) -> VmLock {
        let path = dir.join(format!(".build-{what}.lock"));
        let file = VmLock::open(&path);
        file.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
        VmLock(file)
    }

    /// One of the [`vm_slots`] guest slots; waits until one is free.
    pub fn slot(dir: &Path) -> VmLock {
        let files: Vec<File> = (0..vm_slots())
            .map(|i| VmLock::open(&dir.join(format!(".vm.{i}.lock"))))
            .collect();
        loop {
            for f in &files {
                match f.try_lock() {
                    Ok(()) => {
                        return VmLock(f.try_clone().expect("duplicating a lock file handle"))
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {}
                    Err(std::fs::TryLockError::Error(e)) => panic!("locking a VM slot: {e}"),
                }
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for VmLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The cached initramfs for this kernel and these init files; built by
/// tests/vm/build-initramfs.sh when missing. Call with the build lock held.
fn initramfs(dir: &Path, kver: &str, kroot: &Path, arch: Arch) -> PathBuf {
    let vm_src = super::aws::manifest_dir().join("tests/vm");
    let builder = vm_src.join("build-initramfs.sh");
    let mut hasher = DefaultHasher::new();
    kver.hash(&mut hasher);
    for f in [&builder, &vm_src.join("init")] {
        fs::read(f)
            .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()))
            .hash(&mut hasher);
    }
    let name = format!("initramfs-{kver}-{:016x}.cpio.gz", hasher.finish());
    let path = dir.join(&name);
    if path.is_file() {
        return path;
    }
    let out = Command::new("bash")
        .arg(&builder)
        .arg(kroot)
        .arg(kver)
        .arg(&path)
        .arg(match arch {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", builder.display()));
    assert!(
        out.status.success() && path.is_file(),
        "{} failed ({}):\n{}{}",
        builder.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Drop images built from older init files.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("initramfs-{kver}-")) && n.ends_with(".cpio.gz") && n != name
            {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    path
}

/// The kernel to boot: the uncompressed vmlinux (booted through its PVH
/// entry, skipping the emulated decompression), extracted once and cached
/// next to the initramfs; the package's vmlinuz when extraction fails.
/// Call with the build lock held.
fn kernel_image(dir: &Path, kver: &str, kroot: &Path) -> PathBuf {
    let vmlinuz = kroot.join(format!("boot/vmlinuz-{kver}"));
    let vmlinux = dir.join(format!("vmlinux-{kver}"));
    let unusable = dir.join(format!("vmlinux-{kver}.unusable"));
    if vmlinux.is_file() {
        return vmlinux;
    }
    if unusable.exists() {
        return vmlinuz;
    }
    let script = super::aws::manifest_dir().join("tests/vm/extract-vmlinux.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&vmlinuz)
        .arg(&vmlinux)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    if out.status.success() && vmlinux.is_file() {
        vmlinux
    } else {
        eprintln!(
            "vm: booting the compressed kernel (slower): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let _ = fs::write(&unusable, &out.stderr);
        vmlinuz
    }
}

/// Escapes a value for a QEMU option list (commas are doubled).
pub fn qemu_opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// Paths on the kernel command line and in -virtfs cannot be quoted.
fn plain_path(p: &Path, what: &str) -> String {
    let s = p
        .to_str()
        .unwrap_or_else(|| panic!("{what} {} is not UTF-8", p.display()));
    assert!(
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c == ',' || c == '"' || c == '\''),
        "{what} {s:?}: no whitespace, commas or quotes allowed"
    );
    s.to_owned()
}

/// QEMU arguments every test guest starts with: no defaults, no display or
/// monitor, software emulation with [`vm_cpus`] vCPUs, no reboot (a guest reboot
/// ends QEMU), and a direct kernel boot.
pub fn qemu_boot_args(
    machine: &str,
    cpu: &str,
    mem_mib: u32,
    kernel: &Path,
    initrd: &Path,
    append: &str,
) -> Vec<String> {
    let utf8 = |p: &Path| p.to_str().expect("path is not UTF-8").to_owned();
    [
        "-no-user-config",
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-machine",
        machine,
        "-accel",
        "tcg",
        "-cpu",
        cpu,
        "-smp",
        &vm_cpus().to_string(),
        "-no-reboot",
        "-m",
        &mem_mib.to_string(),
        "-kernel",
        &utf8(kernel),
        "-initrd",
        &utf8(initrd),
        "-append",
        append,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// QEMU arguments for the fenced network (see the module documentation):
/// user networking with `restrict=on`, so the guest reaches nothing but
/// the guestfwd targets, each forwarded to the host's 127.0.0.1.
pub fn fenced_network(imds_port: Option<u16>, endpoint_port: Option<u16>) -> Vec<String> {
    let mut netdev =
        "user,id=n0,restrict=on,ipv6=off,net=169.254.0.0/16,host=169.254.0.2".to_owned();
    if let Some(port) = imds_port {
        netdev.push_str(&format!(
            ",guestfwd=tcp:169.254.169.254:80-cmd:{BUSYBOX} nc 127.0.0.1 {port}"
        ));
    }
    if let Some(port) = endpoint_port {
        netdev.push_str(&format!(
            ",guestfwd=tcp:169.254.170.100:4566-cmd:{BUSYBOX} nc 127.0.0.1 {port}"
        ));
    }
    vec![
        "-netdev".into(),
        netdev,
        "-device".into(),
        "virtio-net-pci,netdev=n0".into(),
    ]
}

/// Kills QEMU (by its PID, via `Child::kill`) if still running when dropped.
pub struct QemuChild(pub Child);

impl QemuChild {
    /// Waits for QEMU to exit; at `deadline` kills it and returns `None`.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {}
                Err(e) => panic!("waiting for QEMU: {e}"),
            }
            if Instant::now() >= deadline {
                let _ = self.0.kill();
                let _ = self.0.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for QemuChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Boots the guest, runs `spec.script` in it and returns when the guest
/// powered off or the timeout killed QEMU. Panics when the host lacks QEMU
/// or the guest kernel ("run scripts/setup"), when QEMU cannot start, and
/// when the guest's /init fails (not a test outcome).
pub fn run(spec: &VmSpec) -> VmRun {
    preflight(spec.arch);
    let qemu = spec.arch.qemu();
    let (kver, kroot) = kernel(spec.arch);
    let vmtest = vmtest_dir();
    let case_dir = case_dir(&spec.name);
    let build_lock = VmLock::build(&vmtest, "kernel");
    let initrd = initramfs(&vmtest, &kver, &kroot, spec.arch);
    let (kernel_image, machine, cpu, console, shared_root) = match spec.arch {
        Arch::X86_64 => (
            kernel_image(&vmtest, &kver, &kroot),
            "pc",
            std::env::var("SECRETFS_VM_CPU").unwrap_or_else(|_| DEFAULT_CPU.to_owned()),
            "ttyS0",
            PathBuf::from("/"),
        ),
        // Debian's arm64 vmlinuz is an uncompressed Image already.
        Arch::Aarch64 => (
            kroot.join(format!("boot/vmlinuz-{kver}")),
            "virt",
            "cortex-a57".to_owned(),
            "ttyAMA0",
            kroot.clone(),
        ),
    };

    drop(build_lock);

    fs::create_dir_all(&case_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", case_dir.display()));
    let out_dir = case_dir.join("out");
    if out_dir.exists() {
        fs::remove_dir_all(&out_dir)
            .unwrap_or_else(|e| panic!("removing {}: {e}", out_dir.display()));
    }
    fs::create_dir_all(&out_dir).unwrap_or_else(|e| panic!("creating {}: {e}", out_dir.display()));

    // The script: prelude, environment, body. The x86_64 guest sees the
    // host's files; the aarch64 guest only the output share.
    let (script_path, guest_script) = match spec.arch {
        Arch::X86_64 => (case_dir.join("script.sh"), case_dir.join("script.sh")),
        Arch::Aarch64 => (
            out_dir.join("script.sh"),
            Path::new(GUEST_OUT).join("script.sh"),
        ),
    };
    let binary = match (spec.arch, &spec.binary) {
        (Arch::X86_64, Some(b)) => b.to_string_lossy().into_owned(),
        (Arch::X86_64, None) => std::env::var("SECRETFS_VM_BINARY")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_secretfs").into()),
        (Arch::Aarch64, Some(b)) => {
            let copy = out_dir.join("secretfs");
            fs::copy(b, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", b.display()));
            format!("{GUEST_OUT}/secretfs")
        }
        (Arch::Aarch64, None) => panic!("an aarch64 guest needs VmSpec::binary"),
    };
    let mut script = String::from(PRELUDE);
    script.push_str("\n# --- environment ---\n");
    let mut env: Vec<(String, String)> = vec![
        ("SECRETFS".into(), binary),
        ("VM_OUT".into(), GUEST_OUT.into()),
    ];
    if spec.imds_port.is_some() {
        env.push(("VM_IMDS".into(), IMDS_URL.into()));
    }
    if spec.endpoint_port.is_some() {
        env.push(("VM_ENDPOINT".into(), ENDPOINT_URL.into()));
    }
    env.extend(spec.env.iter().cloned());
    for (k, v) in &env {
        assert_env_name(k);
        script.push_str(&format!("export {k}={}\n", shell_quote(v)));
    }
    script.push_str("\n# --- test ---\n");
    script.push_str(&spec.script);
    script.push('\n');
    fs::write(&script_path, script)
        .unwrap_or_else(|e| panic!("writing {}: {e}", script_path.display()));

    // Devices the guest's /init waits for.
    let mut wait = Vec::new();
    let (mut n_virtio, mut n_nvme) = (0u8, 0usize);
    let mut disk_args: Vec<String> = Vec::new();
    for disk in &spec.disks {
        assert!(
            disk.path.is_file(),
            "disk image {} does not exist",
            disk.path.display()
        );
        let file = qemu_opt(disk.path.to_str().expect("disk path is not UTF-8"));
        let ro = if disk.read_only { ",readonly=on" } else { "" };
        match &disk.kind {
            DiskKind::Virtio => {
                assert!(n_virtio < 26, "too many virtio disks");
                wait.push(format!("vd{}", (b'a' + n_virtio) as char));
                n_virtio += 1;
                disk_args.push("-drive".into());
                disk_args.push(format!(
                    "file={file},if=virtio,format=raw,cache=unsafe,discard=unmap{ro}"
                ));
            }
            DiskKind::Nvme { serial } => {
                assert!(
                    !serial.is_empty()
                        && serial.len() <= 20
                        && serial.chars().all(|c| c.is_ascii_graphic() && c != ','),
                    "NVMe serial {serial:?}: 1-20 printable characters, no commas"
                );
                wait.push(format!("nvme{n_nvme}n1"));
                disk_args.push("-drive".into());
                disk_args.push(format!(
                    "file={file},if=none,id=nvme{n_nvme},format=raw,cache=unsafe{ro}"
                ));
                disk_args.push("-device".into());
                disk_args.push(format!(
                    "nvme,drive=nvme{n_nvme},serial={serial},logical_block_size=512,physical_block_size=4096"
                ));
                n_nvme += 1;
            }
        }
    }

    let mut append = format!(
        "console={console} panic=-1 quiet cryptomgr.notests=1 mitigations=off secretfs.script={} secretfs.kmods={}",
        plain_path(&guest_script, "case directory"),
        match spec.arch {
            Arch::X86_64 => plain_path(&kroot.join("lib"), "kernel directory"),
            Arch::Aarch64 => "/lib".to_owned(),
        },
    );
    if !wait.is_empty() {
        append.push_str(&format!(" secretfs.wait={}", wait.join(",")));
    }
    if !spec.skip_modules.is_empty() {
        let names: Vec<String> = spec
            .skip_modules
            .iter()
            .map(|m| {
                assert!(
                    !m.is_empty()
                        && m.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
                    "module name {m:?}: use [A-Za-z0-9_-]"
                );
                m.replace('-', "_")
            })
            .collect();
        append.push_str(&format!(
            " secretfs.skip={} modprobe.blacklist={}",
            names.join(","),
            names.join(",")
        ));
    }
    // A guest-side bound too, for a QEMU that outlives this process.
    append.push_str(&format!(
        " secretfs.timeout={}",
        spec.timeout.as_secs().max(1)
    ));

    let mut args = qemu_boot_args(machine, &cpu, spec.mem_mib, &kernel_image, &initrd, &append);
    args.extend([
        "-serial".into(),
        "stdio".into(),
        "-device".into(),
        "virtio-rng-pci".into(),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            plain_path(&shared_root, "shared root")
        ),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag=out,security_model=none,multidevs=remap",
            plain_path(&out_dir, "output directory")
        ),
    ]);
    if spec.imds_port.is_some() || spec.endpoint_port.is_some() {
        args.extend(fenced_network(spec.imds_port, spec.endpoint_port));
    }
    args.extend(disk_args);

    let console_log = case_dir.join("console.log");
    let qemu_log = case_dir.join("qemu.log");
    fs::write(case_dir.join("qemu.args"), args.join("\n") + "\n").ok();
    let qemu_stderr =
        File::create(&qemu_log).unwrap_or_else(|e| panic!("creating {}: {e}", qemu_log.display()));

    let asked = Instant::now();
    let _slot = VmLock::slot(&vmtest);
    let lock_wait = asked.elapsed();
    let started = Instant::now();
    let mut child = QemuChild(
        Command::new(qemu)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(qemu_stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {qemu}: {e}")),
    );

    // Console reader: into memory, console.log and the test's stderr.
    let console = Arc::new(Mutex::new(String::new()));
    let script_started: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let reader = {
        let console = Arc::clone(&console);
        let script_started = Arc::clone(&script_started);
        let mut log = File::create(&console_log)
            .unwrap_or_else(|e| panic!("creating {}: {e}", console_log.display()));
        let tag = spec.name.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']).replace('\r', "");
                if line.starts_with("SECRETFS-VM-START ") {
                    *script_started.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now());
                }
                let _ = writeln!(log, "{line}");
                eprintln!("[vm {tag}] {line}");
                let mut c = console.lock().unwrap_or_else(|e| e.into_inner());
                c.push_str(&line);
                c.push('\n');
            }
        })
    };

    let status = child.wait_until(started + spec.timeout);
    let timed_out = status.is_none();
    let elapsed = started.elapsed();
    let _ = reader.join();
    let console = std::mem::take(&mut *console.lock().unwrap_or_else(|e| e.into_inner()));

    let marker = |prefix: &str| last_marker(&console, prefix);
    let exit_code = marker("SECRETFS-VM-EXIT ").and_then(|s| s.parse().ok());
    let boot_time = script_started
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| t.duration_since(started));
    let init_failed = marker("SECRETFS-VM-INIT-FAILED ");
    let vm_run = VmRun {
        console,
        exit_code,
        timed_out,
        out_dir,
        console_log,
        elapsed,
        boot_time,
    };

    record_boot(
        match spec.arch {
            Arch::X86_64 => "kernel",
            Arch::Aarch64 => "aarch64",
        },
        &spec.name,
        elapsed,
        &vm_run.console,
    );
    if let Some(why) = init_failed {
        panic!(
            "the test guest's /init failed: {why}\n{}",
            vm_run.console_tail(40)
        );
    }
    if let Some(status) = status {
        if !status.success() && exit_code.is_none() {
            panic!(
                "{qemu} failed ({status}); its log ({}):\n{}\n{}",
                qemu_log.display(),
                fs::read_to_string(&qemu_log).unwrap_or_default(),
                vm_run.console_tail(40)
            );
        }
    }
    eprintln!(
        "[vm {}] exit {:?}, boot {:?}, total {:?}{}{}",
        spec.name,
        vm_run.exit_code,
        vm_run.boot_time,
        vm_run.elapsed,
        if timed_out { " (timed out)" } else { "" },
        if lock_wait > Duration::from_secs(1) {
            format!(", after waiting {lock_wait:?} for a VM slot")
        } else {
            String::new()
        }
    );
    vm_run
}

/// Whether `needle` occurs anywhere in the file (grep is fast on big,
/// sparse images).
pub fn image_contains(img: &Path, needle: &str) -> bool {
    grep_image(img, "-F", needle)
}

/// Whether the bytes of `img` match the grep -P pattern (bytes, not text:
/// `\xba` is one byte).
pub fn image_matches(img: &Path, pattern: &str) -> bool {
    grep_image(img, "-P", pattern)
}

fn grep_image(img: &Path, mode: &str, needle: &str) -> bool {
    let st = Command::new("grep")
        .args(["-q", "-a", mode, needle])
        .arg(img)
        .env("LC_ALL", "C")
        .status()
        .expect("running grep");
    match st.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!("grep failed on {}", img.display()),
    }
}

pub fn read_json(run: &VmRun, file: &str) -> serde_json::Value {
    let p = run.out_dir.join(file);
    let text = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), run.console_tail(60)));
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{}: {e}: {text:?}", p.display()))
}

/// `len` bytes of an image at `offset`, for before/after comparisons.
pub fn bytes_at(img: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

pub fn report(run: &VmRun) {
    eprintln!(
        "vm case {}: {:.1}s (boot {:.1}s), exit {:?}",
        run.out_dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        run.elapsed.as_secs_f64(),
        run.boot_time.map_or(0.0, |d| d.as_secs_f64()),
        run.exit_code
    );
}
