//! Real-guest tier: the shipped user data (`userdata/user-data.sh`,
//! `userdata/cloud-config.yaml`) run by a real cloud-init, and the unit it
//! installs run by a real systemd, in a Debian 12 image built from Debian's
//! packages (tests/common/guest.rs, tests/guest/). Each test is one EC2
//! instance booted several times: first boot, reboot, stop/start, and a
//! boot without its key (the cloud-config instance: first boot, then the
//! release .deb installed with apt in place of the user data's install,
//! and a reboot that the package's unit brings the volume up in).
//!
//! What differs from a user's instance, and why (the stand-ins):
//! - the user data's settings lines name the local emulator's bucket, key
//!   and the release binary's checksum; nothing else in the files changes
//!   (checked below);
//! - S3 and KMS are moto at 169.254.170.100:4566 (`AWS_ENDPOINT_URL` for
//!   every unit; the image's `/usr/local/bin/aws` passes it to Debian 12's
//!   AWS CLI 2.9.19, which does not read it); IMDSv2 at 169.254.169.254 is
//!   the project's fake (moto's lacks the token TTL header), serving the
//!   region and role credentials as EC2 does;
//! - the instance store is QEMU NVMe, whose model string reaches secretfs
//!   through its test seam (`SECRETFS_INSTANCE_STORE_MODEL`);
//! - cloud-init reads its user data from a NoCloud seed, not from EC2's
//!   datasource; the instance id stays across boots, as on EC2.
//!
//! The binary the user data installs is the release build
//! (`dist/secretfs-VERSION-x86_64-linux-gnu.tar.gz`, from scripts/release,
//! which scripts/test runs first), and the package is that release's
//! `dist/secretfs_VERSION-1_amd64.deb`; both reach the guest from the
//! emulator's S3.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::aws::{hex, random_bytes};
use common::guest::{Boot, Instance, QEMU_NVME_MODEL};
use common::vm::image_contains;
use common::{LocalAws, GUEST_ENDPOINT};

const BINARY_KEY: &str = "release/secretfs-x86_64";
const WRAPPED_KEY: &str = "secretfs/volume-key.bin";
const DEB_KEY: &str = "release/secretfs_amd64.deb";
/// The context `userdata/` configures (`purpose = "secretfs"`).
const CONTEXT: &str = "purpose=secretfs";
const GIB: u64 = 1 << 30;
/// The PostgreSQL unit Debian runs for the default cluster.
const PG_UNIT: &str = "postgresql@15-main.service";

/// Bash functions for every scenario (after tests/vm/prelude.sh).
const COMMON: &str = r#"
fact() { echo "FACT $1=$2"; }
volume_id() {
  secretfs status --json | python3 -c 'import json, sys
r = json.load(sys.stdin)
print((r.get("set") or {}).get("id") or (r.get("luks") or {}).get("uuid") or "none")'
}
# The user data installs the binary and the config: a re-run would change
# these (or bring back a binary removed since).
installed_fact() {
  fact installed "$(stat -c %i:%Y /usr/local/bin/secretfs /etc/secretfs/secretfs.toml 2>&1 | tr '\n' ' ')"
}
boot_facts() {
  fact system "$(systemctl is-system-running)"
  fact startup "$(systemd-analyze time 2>/dev/null | head -1)"
  fact unit_exit "$(systemctl show -p ExecMainStatus --value secretfs.service)"
  installed_fact
  fact cloud_init "$(cloud-init status 2>&1 | tr '\n' ' ')"
  systemd-analyze blame --no-pager | head -n 12
  cat /var/log/cloud-init-output.log
}
volume_up() {
  check unit_active systemctl is-active --quiet secretfs.service
  check unit_enabled systemctl is-enabled --quiet secretfs.service
  check status_exit_0 secretfs status
  check mounted mountpoint -q /mnt/secretfs
  fact volume "$(volume_id)"
  journalctl -b -u secretfs.service --no-pager | tail -n 20
}
write_canary() {
  printf '%s' "$CANARY" > /mnt/secretfs/canary && sync
}
canary_hash() {
  sha256sum < /mnt/secretfs/canary | cut -d' ' -f1
}
# The three boots every instance has; FIRST_BOOT, REBOOT and STOP_START
# name the checks each must pass.
first_boot() {
  boot_facts
  check cloud_init_done bash -c 'cloud-init status | grep -q "status: done"'
  volume_up
  check canary_written write_canary
  fact canary "$(canary_hash)"
}
after_reboot() {
  boot_facts
  volume_up
  check canary_there test -f /mnt/secretfs/canary
  fact canary "$(canary_hash)"
}
after_stop_start() {
  boot_facts
  volume_up
  check_fails canary_gone test -e /mnt/secretfs/canary
}
"#;
const FIRST_BOOT: &[&str] = &[
    "cloud_init_done",
    "unit_active",
    "unit_enabled",
    "status_exit_0",
    "mounted",
    "canary_written",
];
const REBOOT: &[&str] = &["unit_active", "status_exit_0", "mounted", "canary_there"];
const STOP_START: &[&str] = &["unit_active", "status_exit_0", "mounted", "canary_gone"];

/// The base image builds from Debian's packages, with its own kernel and
/// initramfs beside it. scripts/test runs this test alone in the
/// background while the real-kernel tier runs, so that the instances below
/// find the image built (a cold machine's three minutes of mmdebstrap, on
/// the core the guests leave idle).
#[test]
fn the_guest_image_builds() {
    let image = common::guest::image();
    for f in [&image.root, &image.kernel, &image.initrd] {
        let len = fs::metadata(f).map_or(0, |m| m.len());
        assert!(len > 0, "{} is missing or empty", f.display());
    }
}

/// `text` with each `(from, to)` replaced; each `from` must occur exactly
/// once, so a reworded file fails here rather than in the guest.
fn substitute(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in edits {
        assert_eq!(
            out.matches(from).count(),
            1,
            "expected {from:?} once in the shipped user data"
        );
        out = out.replace(from, to);
    }
    out
}

/// The shipped user-data.sh with its settings lines set: only those lines
/// differ from the file.
fn user_data_sh(binary_sum: &str, aws: &LocalAws) -> String {
    shell_user_data("userdata/user-data.sh", binary_sum, aws)
}

/// A shipped shell user data (`file`) with its settings lines set.
fn shell_user_data(file: &str, binary_sum: &str, aws: &LocalAws) -> String {
    let shipped = fs::read_to_string(common::aws::manifest_dir().join(file))
        .unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let settings = [
        (
            "SECRETFS_BINARY",
            format!("s3://{}/{BINARY_KEY}", aws.moto.bucket),
        ),
        ("SECRETFS_SHA256", binary_sum.to_owned()),
        ("WRAPPED_KEY", aws.moto.s3_uri(WRAPPED_KEY)),
        ("KMS_KEY_ID", aws.moto.alias.clone()),
        ("BUCKET_OWNER", "123456789012".to_owned()),
    ];
    let mut changed = 0;
    let lines: Vec<String> = shipped
        .lines()
        .map(|line| {
            for (name, value) in &settings {
                if line.starts_with(&format!("{name}=")) {
                    changed += 1;
                    return format!("{name}={value}");
                }
            }
            line.to_owned()
        })
        .collect();
    assert_eq!(changed, settings.len(), "{file}: one line per setting");
    lines.join("\n") + "\n"
}

/// The shipped cloud-config.yaml with its settings (bucket, keys, checksum)
/// set in place.
fn cloud_config(binary_sum: &str, aws: &LocalAws) -> String {
    let shipped =
        fs::read_to_string(common::aws::manifest_dir().join("userdata/cloud-config.yaml"))
            .expect("reading userdata/cloud-config.yaml");
    let bucket = format!("--bucket {} --key {BINARY_KEY}", aws.moto.bucket);
    let wrapped = aws.moto.s3_uri(WRAPPED_KEY);
    let alias = format!("\"{}\"", aws.moto.alias);
    substitute(
        &shipped,
        &[
            (
                "--bucket my-artifacts --key secretfs/secretfs-x86_64",
                &bucket,
            ),
            ("s3://my-secrets/secretfs/volume-key.bin", &wrapped),
            ("\"alias/secretfs\"", &alias),
            (&"0".repeat(64), binary_sum),
        ],
    )
}

/// moto + fake IMDS with the release binary and a freshly sealed key in S3.
fn local_aws(dir: &Path) -> (LocalAws, String) {
    let aws = LocalAws::start();
    let (bin, sum) = common::release_binary("x86_64", dir);
    aws.moto.put_object(BINARY_KEY, &fs::read(&bin).unwrap());
    aws.seal(WRAPPED_KEY, CONTEXT);
    (aws, sum)
}

fn stand_ins() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AWS_ENDPOINT_URL", GUEST_ENDPOINT),
        ("SECRETFS_INSTANCE_STORE_MODEL", QEMU_NVME_MODEL),
    ]
}

fn boot(instance: &mut Instance, aws: &LocalAws, label: &str, body: &str) -> Boot {
    let script = format!("{COMMON}\n{body}");
    let b = instance.boot(label, &stand_ins(), &script, aws.imds.port, aws.moto.port);
    let facts = b.facts();
    let fact = |name: &str| facts.get(name).map_or("", |s| s.as_str());
    eprintln!(
        "[guest {}] {} | system {} | cloud-init {}",
        b.label,
        fact("startup"),
        fact("system"),
        fact("cloud_init"),
    );
    b
}

/// Neither the canary nor the rows' marker is on any disk of the instance
/// (instance store and root), read raw after power-off.
fn assert_nothing_in_the_clear(instance: &Instance, needles: &[&str]) {
    let mut images: Vec<&Path> = instance.disks.iter().map(PathBuf::as_path).collect();
    images.push(&instance.root);
    for img in images {
        for n in needles {
            assert!(
                !image_contains(img, n),
                "a plaintext marker is readable in {}",
                img.display()
            );
        }
    }
}

/// A reboot: the same volume with the canary intact, and cloud-init did not
/// run the user data again (it would reinstall the binary and the config).
fn assert_same_volume(first: &Boot, reboot: &Boot) {
    assert_eq!(
        reboot.fact("volume"),
        first.fact("volume"),
        "reboot: the same volume"
    );
    assert_eq!(
        reboot.fact("canary"),
        first.fact("canary"),
        "reboot: the canary intact"
    );
    assert_eq!(
        reboot.fact("installed"),
        first.fact("installed"),
        "reboot: cloud-init ran the user data again"
    );
}

/// A stop/start: a new volume, and still no second run of the user data.
fn assert_new_volume(first: &Boot, restarted: &Boot) {
    assert_ne!(
        restarted.fact("volume"),
        first.fact("volume"),
        "stop/start: a new volume"
    );
    assert_eq!(
        restarted.fact("installed"),
        first.fact("installed"),
        "stop/start: cloud-init ran the user data again"
    );
}

/// `userdata/user-data.sh` on a 2-disk instance with PostgreSQL on the
/// volume: first boot, reboot, stop/start, and a reboot whose key object is
/// gone.
#[test]
fn user_data_script_first_boot_reboot_stop_start_and_a_missing_key() {
    let dir = common::vm::work_dir("real-guest-user-data-host");
    let (aws, sum) = local_aws(&dir);
    let canary = format!("secretfs-canary-{}", hex(&random_bytes(16)));
    let pg_marker = format!("secretfs-row-{}", hex(&random_bytes(12)));
    let mut instance = Instance::launch(
        "real-guest-user-data",
        &user_data_sh(&sum, &aws),
        2,
        2 * GIB,
    );
    let rows = r#"fact rows "$(runuser -u postgres -- psql -tA <<< "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY n)) FROM canary")""#;

    // First boot: cloud-init runs the user data, which installs the unit
    // and brings the volume up; then PostgreSQL moves onto the volume with
    // the drop-in (`install-unit --requires`).
    let first = boot(
        &mut instance,
        &aws,
        "first-boot",
        &format!(
            r#"
CANARY='{canary}'
first_boot
check members_striped bash -c 'secretfs status --json | python3 -c "import json,sys; r=json.load(sys.stdin); assert len(r[\"set\"][\"members\"]) == 2"'
pg_move() {{
  systemctl stop {PG_UNIT} &&
  secretfs install-unit --requires {PG_UNIT} &&
  install -d -o postgres -g postgres -m 0700 /mnt/secretfs/postgresql &&
  cp -a /var/lib/postgresql/15/main /mnt/secretfs/postgresql/main &&
  sed -i "s|^data_directory = .*|data_directory = '/mnt/secretfs/postgresql/main'|" /etc/postgresql/15/main/postgresql.conf &&
  systemctl daemon-reload &&
  systemctl start {PG_UNIT}
}}
check pg_on_volume pg_move
pg_write() {{
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE canary (n int, v text);
INSERT INTO canary SELECT n, '{pg_marker}-' || n FROM generate_series(1, 1000) n;
CHECKPOINT;
SQL
}}
check pg_rows_written pg_write
{rows}
"#
        ),
    );
    first.assert_checks(
        &[
            FIRST_BOOT,
            &["members_striped", "pg_on_volume", "pg_rows_written"],
        ]
        .concat(),
    );
    assert_eq!(first.fact("unit_exit"), "0");
    assert!(
        first.fact("rows").starts_with("1000:"),
        "{}",
        first.fact("rows")
    );

    // Reboot: the instance store keeps its bytes; the unit re-opens the
    // volume, PostgreSQL starts after it and finds its rows.
    let reboot = boot(
        &mut instance,
        &aws,
        "reboot",
        &format!(
            r#"
after_reboot
check pg_active systemctl is-active --quiet {PG_UNIT}
check pg_ordered_after_secretfs bash -c 'systemctl show -p After -p Requires {PG_UNIT} | grep -c secretfs.service | grep -qx 2'
{rows}
"#
        ),
    );
    reboot.assert_checks(&[REBOOT, &["pg_active", "pg_ordered_after_secretfs"]].concat());
    assert_same_volume(&first, &reboot);
    assert_eq!(
        reboot.fact("rows"),
        first.fact("rows"),
        "reboot: PostgreSQL's rows back"
    );
    assert_nothing_in_the_clear(&instance, &[&canary, &pg_marker]);

    // Stop/start: blank instance store; the unit makes a new volume.
    instance.stop_start();
    let restarted = boot(&mut instance, &aws, "stop-start", "after_stop_start");
    restarted.assert_checks(STOP_START);
    assert_new_volume(&first, &restarted);

    // The key is gone (object deleted): the unit fails with exit 4, the
    // service that requires it does not start, nothing lands under the
    // bare mount point, and the boot still reaches multi-user.
    aws.moto.delete_object(WRAPPED_KEY);
    let no_key = boot(
        &mut instance,
        &aws,
        "no-key",
        &format!(
            r#"
boot_facts
journalctl -b -u secretfs.service --no-pager | tail -n 20
check unit_failed systemctl is-failed --quiet secretfs.service
check_fails not_mounted mountpoint -q /mnt/secretfs
check bare_mount_point_empty test -z "$(ls -A /mnt/secretfs)"
check_fails pg_not_started systemctl is-active --quiet {PG_UNIT}
check pg_held_back bash -c 'journalctl -b -u {PG_UNIT} --no-pager | grep -q "Dependency failed"'
check multi_user_reached systemctl is-active --quiet multi-user.target
"#
        ),
    );
    no_key.assert_checks(&[
        "unit_failed",
        "not_mounted",
        "bare_mount_point_empty",
        "pg_not_started",
        "pg_held_back",
        "multi_user_reached",
    ]);
    assert_eq!(
        no_key.fact("unit_exit"),
        "4",
        "no key: exit 4 (key unavailable)"
    );
    assert_eq!(no_key.fact("system"), "degraded");
}

/// The x86_64 .deb of the release (scripts/package, which scripts/release
/// runs; `-1` is its package release): its file name and bytes.
fn release_deb() -> (String, Vec<u8>) {
    let name = format!("secretfs_{}-1_amd64.deb", env!("CARGO_PKG_VERSION"));
    let path = common::aws::manifest_dir().join("dist").join(&name);
    assert!(
        path.is_file(),
        "{} missing: run scripts/release first (scripts/test does)",
        path.display()
    );
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    (name, bytes)
}

/// `userdata/cloud-config.yaml` on a 1-disk instance: first boot, then the
/// release .deb in place of what the user data installed, and a reboot
/// whose volume the package's unit brings up. Its stop/start is not booted
/// again here: the unit is the same text as the one the user-data script
/// installs, whose stop/start the test above boots.
#[test]
fn cloud_config_first_boot_then_the_package_and_reboot() {
    let dir = common::vm::work_dir("real-guest-cloud-config-host");
    let (aws, sum) = local_aws(&dir);
    let (deb, deb_bytes) = release_deb();
    aws.moto.put_object(DEB_KEY, &deb_bytes);
    let canary = format!("secretfs-canary-{}", hex(&random_bytes(16)));
    let mut instance = Instance::launch(
        "real-guest-cloud-config",
        &cloud_config(&sum, &aws),
        1,
        2 * GIB,
    );

    // First boot: cloud-init's runcmd installs the binary and its unit and
    // brings the volume up. Then the move to the package, as README's
    // "Release archives" says: the user data's unit stopped and removed
    // with its binary, `apt-get install ./secretfs_*.deb` (its dependencies
    // are in the image; the fenced network reaches no mirror), `systemctl
    // enable --now secretfs`.
    let first = boot(
        &mut instance,
        &aws,
        "first-boot",
        &format!(
            r#"
CANARY='{canary}'
first_boot
to_package() {{
  aws s3api get-object --bucket {bucket} --key {DEB_KEY} /var/tmp/{deb} >/dev/null &&
  systemctl disable --now secretfs.service &&
  rm /etc/systemd/system/secretfs.service /usr/local/bin/secretfs &&
  (cd /var/tmp && DEBIAN_FRONTEND=noninteractive apt-get install -y -q ./{deb}) &&
  systemctl daemon-reload &&
  systemctl enable --now secretfs.service
}}
check package_installed to_package
hash -r
check package_unit_up bash -c 'systemctl is-active --quiet secretfs.service && mountpoint -q /mnt/secretfs'
check canary_kept test -f /mnt/secretfs/canary
fact volume_package "$(volume_id)"
installed_fact
"#,
            bucket = aws.moto.bucket,
        ),
    );
    first.assert_checks(
        &[
            FIRST_BOOT,
            &["package_installed", "package_unit_up", "canary_kept"],
        ]
        .concat(),
    );
    assert_eq!(
        first.fact("volume_package"),
        first.fact("volume"),
        "the package's unit: the same volume"
    );

    // Reboot: the package's unit (its file, its binary) re-opens the
    // volume; nothing of the user data's install is left to do it.
    let reboot = boot(
        &mut instance,
        &aws,
        "reboot",
        &format!(
            r#"
after_reboot
check deb_installed bash -c 'dpkg -s secretfs | grep -qx "Status: install ok installed"'
fact fragment "$(systemctl show -p FragmentPath --value secretfs.service)"
fact exec_start "$(systemctl show -p ExecStart --value secretfs.service)"
check unit_from_package bash -c 'f=$(systemctl show -p FragmentPath --value secretfs.service) && [[ $(realpath "$f") == /usr/lib/systemd/system/secretfs.service ]] && dpkg -L secretfs | grep -qx /usr/lib/systemd/system/secretfs.service'
check unit_runs_usr_bin bash -c 'systemctl show -p ExecStart --value secretfs.service | grep -q "path=/usr/bin/secretfs ;"'
check_fails no_unit_in_etc test -e /etc/systemd/system/secretfs.service
check_fails no_user_data_binary test -e /usr/local/bin/secretfs
check package_binary_is_release bash -c 'echo "{sum}  /usr/bin/secretfs" | sha256sum --check --strict --quiet'
check package_man_page bash -c 'dpkg -L secretfs | grep -qx /usr/share/man/man1/secretfs.1.gz && test -s /usr/share/man/man1/secretfs.1.gz'
check unit_logged_by_usr_bin bash -c 'journalctl -b _SYSTEMD_UNIT=secretfs.service -o json | python3 -c "import json, sys
exe = {{json.loads(l).get(\"_EXE\") for l in sys.stdin}} - {{None}}
print(\"secretfs.service logged from\", sorted(exe))
sys.exit(exe != {{\"/usr/bin/secretfs\"}})"'
"#
        ),
    );
    reboot.assert_checks(
        &[
            REBOOT,
            &[
                "deb_installed",
                "unit_from_package",
                "unit_runs_usr_bin",
                "no_unit_in_etc",
                "no_user_data_binary",
                "package_binary_is_release",
                "package_man_page",
                "unit_logged_by_usr_bin",
            ],
        ]
        .concat(),
    );
    assert_eq!(reboot.fact("unit_exit"), "0");
    assert!(
        reboot
            .fact("fragment")
            .ends_with("/lib/systemd/system/secretfs.service"),
        "{}",
        reboot.fact("fragment")
    );
    assert!(
        reboot
            .fact("exec_start")
            .contains("argv[]=/usr/bin/secretfs up --config /etc/secretfs/secretfs.toml"),
        "{}",
        reboot.fact("exec_start")
    );
    assert_same_volume(&first, &reboot);
    assert_nothing_in_the_clear(&instance, &[&canary]);
}

/// What an EKS AL2023 AMI has and this image does not, as the first part
/// of a MIME multipart user data (the shipped k8s user data is the
/// second): `nodeadm-run.service` ordered as on EKS, running
/// `setup-local-disks raid0 --dir /mnt/k8s-disks` by bare name with
/// systemd's default PATH and then starting containerd and kubelet; the
/// AMI's own `/usr/bin/setup-local-disks` (which must not be the one run);
/// and containerd and kubelet that append a line (the marker reversed,
/// this boot's id) to a file in each of their directories when they start.
const K8S_STAND_INS: &str = r#"#!/bin/bash
set -euo pipefail
echo K8S_MARKER > /etc/k8s-marker
printf '%s\n' '#!/bin/sh' 'touch /run/stock-setup-local-disks-ran' 'exit 1' > /usr/bin/setup-local-disks
chmod 0755 /usr/bin/setup-local-disks
install -d /usr/local/lib/stand-in
cat > /usr/local/lib/stand-in/write <<'SCRIPT'
#!/bin/sh
# write FILE...: a line (the marker reversed, the boot id) appended to
# each, then wait. Reversed: only what a service wrote holds it.
for f in "$@"; do echo "$(rev /etc/k8s-marker)-$(cat /proc/sys/kernel/random/boot_id)" >> "$f"; done
exec sleep infinity
SCRIPT
chmod 0755 /usr/local/lib/stand-in/write
cat > /etc/systemd/system/nodeadm-run.service <<'UNIT'
[Unit]
Description=Stand-in for EKS nodeadm-run (setup-local-disks, then containerd and kubelet)
After=nodeadm-config.service cloud-final.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'setup-local-disks raid0 --dir /mnt/k8s-disks && systemctl start containerd.service kubelet.service'

# EKS's unit says WantedBy=multi-user.target; here multi-user.target
# would then be ordered after it, and Debian 12's cloud-final after
# multi-user.target (AL2023's is not): an ordering cycle systemd breaks
# by dropping this start. cloud-init.target keeps EKS's order without it.
[Install]
WantedBy=cloud-init.target
UNIT
cat > /etc/systemd/system/containerd.service <<'UNIT'
[Unit]
Description=Stand-in containerd
[Service]
ExecStart=/usr/local/lib/stand-in/write /var/lib/containerd/state
UNIT
cat > /etc/systemd/system/kubelet.service <<'UNIT'
[Unit]
Description=Stand-in kubelet
[Service]
ExecStartPre=/bin/mkdir -p /var/lib/kubelet /var/log/pods
ExecStart=/usr/local/lib/stand-in/write /var/lib/kubelet/state /var/log/pods/log
UNIT
mkdir -p /var/lib/containerd /var/lib/kubelet
systemctl daemon-reload
systemctl enable nodeadm-run.service
# On EKS its start job is part of the boot from the start.
systemctl start --no-block nodeadm-run.service
"#;

/// The k8s user data: the stand-ins, then the shipped
/// `userdata/k8s-user-data.sh` with its settings lines set.
fn k8s_user_data(binary_sum: &str, aws: &LocalAws, marker: &str) -> String {
    let part = |text: &str| {
        format!("--//\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n{text}\n")
    };
    format!(
        "Content-Type: multipart/mixed; boundary=\"//\"\nMIME-Version: 1.0\n\n{}{}--//--\n",
        part(&substitute(K8S_STAND_INS, &[("K8S_MARKER", marker)])),
        part(&shell_user_data(
            "userdata/k8s-user-data.sh",
            binary_sum,
            aws
        ))
    )
}

/// Guest functions of the Kubernetes node.
const K8S: &str = r#"
wait_active() { for _ in $(seq 240); do systemctl is-active --quiet "$1" && return 0; sleep 1; done; return 1; }
# The root disk as it is under the mounts.
root_view() { mkdir -p /run/rootview; mountpoint -q /run/rootview || mount --bind / /run/rootview; }
nothing_on_root() {
  root_view
  for f in var/lib/kubelet/state var/lib/containerd/state var/log/pods/log; do
    [ ! -e "/run/rootview/$f" ] || { echo "on the root disk: /$f"; return 1; }
  done
}
bound() { findmnt -n -o SOURCE "$1" | grep -qx "/dev/mapper/secretfs\[/$2\]"; }
lines() { wc -l < "$1"; }
k8s_node() {
  fact system "$(systemctl is-system-running)"
  check nodeadm_run_done wait_active nodeadm-run.service
  check kubelet_running wait_active kubelet.service
  check containerd_running wait_active containerd.service
  journalctl -b -u secretfs.service -u nodeadm-run.service --no-pager | tail -n 30
  check volume_xfs grep -q '^/dev/mapper/secretfs /mnt/k8s-disks/0 xfs ' /proc/mounts
  check two_members bash -c 'secretfs status --json | python3 -c "import json,sys; r=json.load(sys.stdin); assert len(r[\"set\"][\"members\"]) == 2"'
  check bound_kubelet bound /var/lib/kubelet kubelet
  check bound_containerd bound /var/lib/containerd containerd
  check bound_soci bound /var/lib/soci-snapshotter-grpc soci-snapshotter-grpc
  check bound_pods bound /var/log/pods pods
  check_fails stock_script_ran test -e /run/stock-setup-local-disks-ran
  check state_on_volume test -s /mnt/k8s-disks/0/kubelet/state -a -s /mnt/k8s-disks/0/containerd/state -a -s /mnt/k8s-disks/0/pods/log
  check nothing_on_root nothing_on_root
  check secretfs_before_nodeadm bash -c 'systemctl show -p After -p Requires nodeadm-run.service | grep -c secretfs.service | grep -qx 2'
  fact volume "$(volume_id)"
  fact kubelet_lines "$(lines /mnt/k8s-disks/0/kubelet/state)"
  fact containerd_lines "$(lines /mnt/k8s-disks/0/containerd/state)"
}
"#;
const K8S_NODE: &[&str] = &[
    "nodeadm_run_done",
    "kubelet_running",
    "containerd_running",
    "volume_xfs",
    "two_members",
    "bound_kubelet",
    "bound_containerd",
    "bound_soci",
    "bound_pods",
    "stock_script_ran",
    "state_on_volume",
    "nothing_on_root",
    "secretfs_before_nodeadm",
];

/// An EKS node (stand-ins for nodeadm-run, kubelet and containerd) with
/// the shipped k8s user data on two instance-store disks: first boot,
/// reboot, stop/start, and a boot whose key is gone.
#[test]
fn kubernetes_node_first_boot_reboot_stop_start_and_a_missing_key() {
    let dir = common::vm::work_dir("real-guest-k8s-host");
    let (aws, sum) = local_aws(&dir);
    let marker = format!("secretfs-k8s-{}", hex(&random_bytes(16)));
    // What the services write: on no disk in the clear, the root disk
    // included (they write only onto the volume).
    let written: String = marker.chars().rev().collect();
    let mut instance = Instance::launch(
        "real-guest-k8s",
        &k8s_user_data(&sum, &aws, &marker),
        2,
        GIB,
    );
    let boot_k8s = |instance: &mut Instance, label: &str, body: &str| {
        boot(instance, &aws, label, &format!("{K8S}\n{body}"))
    };

    // First boot: the user data brings the volume up; the stand-in
    // nodeadm-run (after cloud-final) runs the link, which binds the
    // directories (copying what the AMI left in them) before kubelet and
    // containerd start.
    let first = boot_k8s(
        &mut instance,
        "first-boot",
        r#"
check cloud_init_done bash -c 'cloud-init status --wait | grep -q "status: done"'
cat /var/log/cloud-init-output.log
k8s_node
check link_is_ours test "$(readlink /usr/local/sbin/setup-local-disks)" = /usr/local/bin/secretfs
"#,
    );
    first.assert_checks(&[&["cloud_init_done"], K8S_NODE, &["link_is_ours"]].concat());
    assert_eq!(first.fact("kubelet_lines"), "1");

    // Reboot: secretfs.service opens the volume before nodeadm-run, whose
    // setup-local-disks binds again (no copy); kubelet's file holds both
    // boots' lines, so it was bound before kubelet started.
    // Then each --no-bind-* flag by hand, the services stopped and the
    // binds released before each run: the flag's directory stays on the
    // root disk, the others are bound (`--no-bind-mounts`: none is). The
    // last run, without a flag, binds all four again from the volume.
    let reboot = boot_k8s(
        &mut instance,
        "reboot",
        r#"
k8s_node
BIND_DIRS="/var/lib/kubelet /var/lib/containerd /var/lib/soci-snapshotter-grpc /var/log/pods"
# no_bind FLAG DIR...: setup-local-disks with --no-bind-FLAG (none if FLAG
# is empty) leaves exactly DIR... unbound.
no_bind() {
  local flag=$1 d
  shift
  systemctl stop kubelet containerd || return 1
  for d in $BIND_DIRS; do ! mountpoint -q "$d" || umount "$d" || return 1; done
  setup-local-disks raid0 --dir /mnt/k8s-disks ${flag:+"--no-bind-$flag"} || return 1
  for d in $BIND_DIRS; do
    case " $* " in
      *" $d "*) ! mountpoint -q "$d" || { echo "$d bound despite --no-bind-$flag"; return 1; } ;;
      *) mountpoint -q "$d" || { echo "$d not bound (flag: ${flag:-none})"; return 1; } ;;
    esac
  done
}
all_bound() {
  bound /var/lib/kubelet kubelet && bound /var/lib/containerd containerd &&
    bound /var/lib/soci-snapshotter-grpc soci-snapshotter-grpc && bound /var/log/pods pods
}
check no_bind_kubelet no_bind kubelet /var/lib/kubelet
check no_bind_containerd no_bind containerd /var/lib/containerd
check no_bind_soci no_bind soci /var/lib/soci-snapshotter-grpc
check no_bind_pods_logs no_bind pods-logs /var/log/pods
check no_bind_mounts no_bind mounts $BIND_DIRS
check bind_all_again no_bind ""
check binds_from_the_volume all_bound
"#,
    );
    reboot.assert_checks(
        &[
            K8S_NODE,
            &[
                "no_bind_kubelet",
                "no_bind_containerd",
                "no_bind_soci",
                "no_bind_pods_logs",
                "no_bind_mounts",
                "bind_all_again",
                "binds_from_the_volume",
            ],
        ]
        .concat(),
    );
    assert_eq!(reboot.fact("volume"), first.fact("volume"));
    assert_eq!(reboot.fact("kubelet_lines"), "2");
    assert_eq!(reboot.fact("containerd_lines"), "2");
    assert_nothing_in_the_clear(&instance, &[&written]);

    // Stop/start: blank disks, a new volume, the binds made again. Then
    // the drain hook of doc/kubernetes.md: stop the services, release the
    // binds, shred; no member keeps a LUKS header.
    instance.stop_start();
    let restarted = boot_k8s(
        &mut instance,
        "stop-start",
        r#"
k8s_node
drain_and_shred() {
  systemctl stop kubelet containerd &&
  umount -R /var/lib/kubelet /var/lib/containerd /var/lib/soci-snapshotter-grpc /var/log/pods &&
  secretfs shred --yes
}
check drain_and_shred drain_and_shred
no_luks() { for d in /dev/nvme0n1 /dev/nvme1n1; do [ -b "$d" ] && ! cryptsetup isLuks "$d" || return 1; done; }
check shredded_no_luks no_luks
"#,
    );
    restarted.assert_checks(&[K8S_NODE, &["drain_and_shred", "shredded_no_luks"]].concat());
    assert_ne!(restarted.fact("volume"), first.fact("volume"));
    assert_eq!(restarted.fact("kubelet_lines"), "1");

    // The key is gone: secretfs.service fails; nodeadm-run, kubelet and
    // containerd never start, and nothing is written on the root disk
    // under the bound paths.
    aws.moto.delete_object(WRAPPED_KEY);
    let no_key = boot_k8s(
        &mut instance,
        "no-key",
        r#"
fact system "$(systemctl is-system-running)"
journalctl -b -u secretfs.service -u nodeadm-run.service --no-pager | tail -n 20
check unit_failed systemctl is-failed --quiet secretfs.service
check nodeadm_held_back bash -c 'journalctl -b -u nodeadm-run.service --no-pager | grep -q "Dependency failed"'
check_fails nodeadm_ran systemctl is-active --quiet nodeadm-run.service
check_fails kubelet_ran systemctl is-active --quiet kubelet.service
check_fails containerd_ran systemctl is-active --quiet containerd.service
check_fails volume_mounted mountpoint -q /mnt/k8s-disks/0
check nothing_on_root nothing_on_root
"#,
    );
    no_key.assert_checks(&[
        "unit_failed",
        "nodeadm_held_back",
        "nodeadm_ran",
        "kubelet_ran",
        "containerd_ran",
        "volume_mounted",
        "nothing_on_root",
    ]);
    assert_nothing_in_the_clear(&instance, &[&written]);
}

/// nodeadm's `mount` strategy: the k8s user data with `each-disk = true`
/// and `mount = "/mnt/k8s-disks"` (the two lines the docs change), and the
/// stand-in nodeadm-run calling `setup-local-disks mount`.
fn k8s_mount_user_data(binary_sum: &str, aws: &LocalAws, marker: &str) -> String {
    substitute(
        &k8s_user_data(binary_sum, aws, marker),
        &[
            (
                "mount = \"/mnt/k8s-disks/0\"",
                "mount = \"/mnt/k8s-disks\"\neach-disk = true",
            ),
            (
                "setup-local-disks raid0 --dir",
                "setup-local-disks mount --dir",
            ),
        ],
    )
}

/// The mount strategy's volumes: which LUKS volume and which disk is at
/// DIR/N, and what its file says.
const K8S_EACH: &str = r#"
at() { secretfs status --name "secretfs-disk$1" --json | python3 -c "import json,sys; r=json.load(sys.stdin); print(r$2)"; }
k8s_each() {
  fact system "$(systemctl is-system-running)"
  check nodeadm_run_done wait_active nodeadm-run.service
  check kubelet_running wait_active kubelet.service
  journalctl -b -u secretfs.service -u nodeadm-run.service --no-pager | tail -n 30
  check disk1_xfs grep -q '^/dev/mapper/secretfs-disk1 /mnt/k8s-disks/1 xfs ' /proc/mounts
  check disk2_xfs grep -q '^/dev/mapper/secretfs-disk2 /mnt/k8s-disks/2 xfs ' /proc/mounts
  check status_each bash -c 'secretfs status --json | python3 -c "import json,sys; r=json.load(sys.stdin); assert r[\"ok\"] and [v[\"name\"] for v in r[\"volumes\"]] == [\"secretfs-disk1\", \"secretfs-disk2\"], r"'
  check_fails kubelet_bound mountpoint -q /var/lib/kubelet
  for n in 1 2; do
    fact "uuid$n" "$(at $n '["luks"]["uuid"]')"
    fact "device$n" "$(at $n '["device"]')"
    # The disk's place on the bus (QEMU's serial ends in N<slot>).
    fact "slot$n" "$(tr -d ' ' < "/sys/block/$(basename "$(at $n '["device"]')")/device/serial" | sed 's/.*N//')"
    fact "index$n" "$(at $n '["luks"]["token"]["disk"]')"
  done
}
"#;

/// An EKS node with nodeadm's `mount` strategy on two instance-store disks:
/// a volume per disk at `DIR/1` and `DIR/2`, each disk's index kept in its
/// header. After a reboot with the disks attached the other way round (the
/// kernel names them the other way), each `DIR/N` holds the same volume
/// and the same file; `down` then takes both down, and after `up`,
/// `shred` erases both.
#[test]
fn kubernetes_node_mount_strategy_keeps_each_disk_at_its_place() {
    let dir = common::vm::work_dir("real-guest-k8s-mount-host");
    let (aws, sum) = local_aws(&dir);
    let marker = format!("secretfs-k8s-{}", hex(&random_bytes(16)));
    // What the scenario writes onto each volume: on no disk in the clear.
    let needle = format!("secretfs-disk-{}", hex(&random_bytes(16)));
    let mut instance = Instance::launch(
        "real-guest-k8s-mount",
        &k8s_mount_user_data(&sum, &aws, &marker),
        2,
        GIB,
    );
    let first = boot(
        &mut instance,
        &aws,
        "first-boot",
        &format!(
            r#"{K8S}
{K8S_EACH}
check cloud_init_done bash -c 'cloud-init status --wait | grep -q "status: done"'
cat /var/log/cloud-init-output.log
k8s_each
check files_written bash -c 'for n in 1 2; do echo "disk $n {needle}" > /mnt/k8s-disks/$n/which || exit 1; done; sync'
"#
        ),
    );
    const EACH: &[&str] = &[
        "nodeadm_run_done",
        "kubelet_running",
        "disk1_xfs",
        "disk2_xfs",
        "status_each",
        "kubelet_bound",
    ];
    first.assert_checks(&[&["cloud_init_done"], EACH, &["files_written"]].concat());
    assert_eq!(
        (first.fact("index1"), first.fact("index2")),
        ("1".to_string(), "2".to_string())
    );

    // Reboot with the disks the other way round: the unit opens each
    // volume at the index its token keeps.
    instance.disks.reverse();
    let reboot = boot(
        &mut instance,
        &aws,
        "reboot-reordered",
        &format!(
            r#"{K8S}
{K8S_EACH}
k8s_each
check file1 grep -qx "disk 1 {needle}" /mnt/k8s-disks/1/which
check file2 grep -qx "disk 2 {needle}" /mnt/k8s-disks/2/which
check down_both secretfs down
check_fails none_open bash -c 'ls /dev/mapper | grep -q secretfs-disk'
check up_again secretfs up
check shred_both secretfs shred --yes
no_luks() {{ for d in /dev/nvme0n1 /dev/nvme1n1; do [ -b "$d" ] && ! cryptsetup isLuks "$d" || return 1; done; }}
check shredded_no_luks no_luks
"#
        ),
    );
    reboot.assert_checks(
        &[
            EACH,
            &[
                "file1",
                "file2",
                "down_both",
                "none_open",
                "up_again",
                "shred_both",
                "shredded_no_luks",
            ],
        ]
        .concat(),
    );
    for n in ["1", "2"] {
        let fact = |b: &Boot, f: &str| b.fact(&format!("{f}{n}"));
        eprintln!(
            "disk {n}: {} in slot {}, then {} in slot {}",
            fact(&first, "device"),
            fact(&first, "slot"),
            fact(&reboot, "device"),
            fact(&reboot, "slot")
        );
        assert_eq!(
            fact(&reboot, "uuid"),
            fact(&first, "uuid"),
            "disk {n}: the same volume"
        );
        assert!(
            ["0", "1"].contains(&fact(&first, "slot").as_str()),
            "disk {n}: a slot"
        );
        assert_ne!(
            fact(&reboot, "slot"),
            fact(&first, "slot"),
            "disk {n}: attached in the other slot after the reorder"
        );
    }
    assert_nothing_in_the_clear(&instance, &[&needle]);
}
