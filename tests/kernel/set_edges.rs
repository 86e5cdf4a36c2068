//! Sets at their edges, in a real kernel, in one boot (a disk per case,
//! the key from a passphrase file):
//!
//! M. A mixed set: one blank disk, one holding ext4, one holding random
//!    bytes with no signature. Without `--force`: refused (exit 3), every
//!    disk's bytes unchanged, and a dry run says the same. With `--force`:
//!    the dry run's plan names what is destroyed (`forced`, and a
//!    `wipe_signatures` step for each foreign disk, none for the blank
//!    one); then the two foreign disks are wiped and one set is made over
//!    all three, which re-opens afterwards without `--force`.
//! R. A read-only member (QEMU `readonly=on`) of a new set: refused
//!    (exit 3) with or without `--force`, nothing written on either disk.
//! E. An existing set with one member marked read-only (`blockdev
//!    --setro`) after `down`: assembled and mounted read-write, data
//!    intact (the read-only refusal guards new headers only).
//! C. `disk = [A, B]` in a config file (root's, mode 0600) makes a set;
//!    `down --config` and `up --config` re-open it with its data.
//! N. Two emulated NVMe disks counted as instance store under
//!    `--disk auto`: a two-member set made, taken down, re-opened.

use std::time::Duration;

use crate::common::aws;
use crate::common::vm::{self, read_json, report, Disk, VmSpec};

const MIB: u64 = 1 << 20;

const GUEST_LIB: &str = r#"
umask 077
# No trailing newline: secretfs reads the whole file as the passphrase.
head -c 48 /dev/urandom | base64 | tr -d '\n' > /run/pass
export SECRETFS_INSTANCE_STORE_MODEL='QEMU NVMe Ctrl'
up() { "$SECRETFS" up --passphrase-file /run/pass --pbkdf pbkdf2 "$@"; }
rc_of() { cat "$VM_OUT/$1.rc"; }
# record NAME CMD...: CMD's stdout in $VM_OUT/NAME.out, stderr in
# $VM_OUT/NAME.err, exit code in $VM_OUT/NAME.rc.
record() { local n=$1; shift; "$@" > "$VM_OUT/$n.out" 2> "$VM_OUT/$n.err"; echo $? > "$VM_OUT/$n.rc"; cat "$VM_OUT/$n.err"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }
# The hash of each device named, one line each.
sums() { for d in "$@"; do sha256sum "$d" | cut -d' ' -f1; done; }
nothing_open() { ! dmsetup ls | grep -q "^$1" && ! grep -q " /mnt/$1 " /proc/mounts; }
"#;

#[test]
fn vm_set_edges() {
    let dir = vm::work_dir("set_edges");
    let mut disks = Vec::new();
    let mut virtio = |name: &str, read_only: bool| -> String {
        let p = dir.join(format!("{name}.img"));
        vm::sparse_file(&p, 64 * MIB);
        let d = Disk::virtio(&p);
        disks.push(if read_only { d.read_only() } else { d });
        let n = disks
            .iter()
            .filter(|d| matches!(d.kind, vm::DiskKind::Virtio))
            .count();
        format!("/dev/vd{}", (b'a' + n as u8 - 1) as char)
    };
    let canary = aws::hex(&aws::random_bytes(16));
    let mut s = format!("{GUEST_LIB}\nexport CANARY={canary}\n");
    let mut expected: Vec<String> = Vec::new();
    // Every `check NAME` line of a case is expected to pass.
    let mut checks = |s: &mut String, body: &str| {
        s.push_str(body);
        s.push('\n');
        expected.extend(vm::check_names(body));
    };

    // M. Mixed: blank, ext4, random bytes. --force wipes the two foreign
    //    disks (and only them) and makes one set of all three.
    let (m0, m1, m2) = (
        virtio("m0", false),
        virtio("m1", false),
        virtio("m2", false),
    );
    checks(
        &mut s,
        &format!(
            r#"
M="--disk {m0} --disk {m1} --disk {m2} --name mx --mount /mnt/mx"
check m_ext4 mkfs.ext4 -q {m1}
check m_random dd if=/dev/urandom of={m2} bs=1M seek=8 count=4 conv=notrunc,fsync status=none
sums {m0} {m1} {m2} > /run/m.before
record m_refused up $M
check m_refused_3 test "$(rc_of m_refused)" = 3
check m_refused_names_ext4 grep -q "{m1} holds an ext4 signature" "$VM_OUT/m_refused.err"
check m_refused_says_force grep -q "pass --force to make a new set of all 3" "$VM_OUT/m_refused.err"
check m_refused_nothing_open nothing_open mx
record m_dry up --dry-run --json $M
check m_dry_3 test "$(rc_of m_dry)" = 3
# The first JSON document: the dry run's report (the error object follows).
head -n 1 "$VM_OUT/m_dry.out" > "$VM_OUT/m_dry.json"
check m_dry_refused test "$(json $VM_OUT/m_dry.json '(d["dry_run"], d["ok"])')" = "(True, False)"
check m_dry_names_ext4 test "$(json $VM_OUT/m_dry.json '"{m1} holds an ext4 signature" in d["refused"]')" = True
record m_dry_force up --dry-run --json --force $M
check m_dry_force_ok test "$(rc_of m_dry_force)" = 0
check m_unchanged test "$(sums {m0} {m1} {m2})" = "$(cat /run/m.before)"
# What the plan says --force destroys.
forced() {{ json "$VM_OUT/m_dry_force.out" 'd["plan"]["forced"]' | grep -q "$1"; }}
not() {{ ! "$@"; }}
check m_forced_ext4 forced "an ext4 signature on {m1}"
check m_forced_random forced "non-zero data .* with no known signature on {m2}"
check m_forced_not_blank not forced "{m0}"
check m_plan_wipes_two test "$(json $VM_OUT/m_dry_force.out '[s["dev"]["path"] for s in d["plan"]["steps"] if s["step"] == "wipe_signatures"]')" = "['{m1}', '{m2}']"
record m_force up --json --force $M
check m_force_ok test "$(rc_of m_force)" = 0
check m_force_three_members test "$(json $VM_OUT/m_force.out 'd["members"]')" = "['{m0}', '{m1}', '{m2}']"
check m_force_first_format test "$(json $VM_OUT/m_force.out 'd["first_format"]')" = True
check m_force_wiped_two test "$(json $VM_OUT/m_force.out '[s["step"] for s in d["steps"]].count("wipe_signatures")')" = 2
check m_force_warns_ext4 grep -q -- "--force: erasing an ext4 signature on {m1}" "$VM_OUT/m_force.err"
check m_force_warns_random grep -q -- "--force: erasing .*non-zero data.* on {m2}" "$VM_OUT/m_force.err"
check m_mounted grep -q "^/dev/mapper/mx /mnt/mx ext4 " /proc/mounts
check m_stripe_three sh -c 'dmsetup table mx | grep -q " striped 3 1024 "'
check m_all_luks sh -c 'for d in {m0} {m1} {m2}; do cryptsetup isLuks $d || exit 1; done'
check m_no_ext4_left sh -c '! blkid -p {m1} | grep -q "TYPE=\"ext4\""'
check m_write sh -c 'echo "$CANARY" > /mnt/mx/canary && sync'
check m_down "$SECRETFS" down --name mx
record m_reopen up --json $M
check m_reopen_ok test "$(rc_of m_reopen)" = 0
check m_reopen_not_formatted test "$(json $VM_OUT/m_reopen.out 'd["first_format"]')" = False
check m_intact grep -qx "$CANARY" /mnt/mx/canary
check m_down2 "$SECRETFS" down --name mx
"#
        ),
    );

    // R. A read-only disk in a new set: refused before anything is
    //    written, --force or not.
    let (r0, r1) = (virtio("r0", false), virtio("r1", true));
    checks(
        &mut s,
        &format!(
            r#"
R="--disk {r0} --disk {r1} --name ro --mount /mnt/ro"
check r_is_read_only test "$(cat /sys/block/{r1_name}/ro)" = 1
check r_other_writable test "$(cat /sys/block/{r0_name}/ro)" = 0
sums {r0} {r1} > /run/r.before
record r_up up $R
check r_refused_3 test "$(rc_of r_up)" = 3
check r_names_it grep -q "{r1} is read-only: a new set cannot be written" "$VM_OUT/r_up.err"
record r_force up --force $R
check r_force_refused_3 test "$(rc_of r_force)" = 3
check r_unchanged test "$(sums {r0} {r1})" = "$(cat /run/r.before)"
check r_nothing_open nothing_open ro
check r_no_header sh -c '! cryptsetup isLuks {r0} && ! cryptsetup isLuks {r1}'
"#,
            r0_name = &r0[5..],
            r1_name = &r1[5..],
        ),
    );

    // E. An existing set, one member marked read-only (`blockdev --setro`)
    //    after `down`. The read-only refusal is for writing new headers
    //    only: the set is assembled and mounted read-write as usual (as a
    //    single-disk volume of ours on a read-only disk is opened). The
    //    flag set this way does not stop writes in the kernel (6.1 only
    //    logs them): whatever ext4 writes in that member's chunks lands on
    //    it (the console says whether anything did).
    let (e0, e1) = (virtio("e0", false), virtio("e1", false));
    checks(
        &mut s,
        &format!(
            r#"
E="--disk {e0} --disk {e1} --name ex --mount /mnt/ex"
check e_make up $E
check e_write sh -c 'echo "$CANARY" > /mnt/ex/canary && sync'
check e_down "$SECRETFS" down --name ex
check e_setro blockdev --setro {e1}
check e_is_read_only test "$(cat /sys/block/{e1_name}/ro)" = 1
sums {e1} > /run/e.before
record e_up up --json $E
check e_up_ok test "$(rc_of e_up)" = 0
check e_not_formatted test "$(json $VM_OUT/e_up.out 'd["first_format"]')" = False
check e_mounted_rw grep -Eq "^/dev/mapper/ex /mnt/ex ext4 rw," /proc/mounts
check e_intact grep -qx "$CANARY" /mnt/ex/canary
check e_down2 "$SECRETFS" down --name ex
test "$(sums {e1})" = "$(cat /run/e.before)" && echo "e: the read-only member is unchanged" || echo "e: the read-only member was written"
check e_setrw blockdev --setrw {e1}
"#,
            e1_name = &e1[5..],
        ),
    );

    // C. disk = [A, B] in a config file.
    let (c0, c1) = (virtio("c0", false), virtio("c1", false));
    checks(
        &mut s,
        &format!(
            r#"
cat > /run/cfg.toml <<EOF
passphrase-file = "/run/pass"
disk = ["{c0}", "{c1}"]
name = "cfg"
mount = "/mnt/cfg"
pbkdf = "pbkdf2"
EOF
chmod 600 /run/cfg.toml
check c_config_owner test "$(stat -c '%U %a' /run/cfg.toml)" = "root 600"
record c_up "$SECRETFS" up --config /run/cfg.toml --json
check c_up_ok test "$(rc_of c_up)" = 0
check c_two_members test "$(json $VM_OUT/c_up.out 'd["members"]')" = "['{c0}', '{c1}']"
check c_first_format test "$(json $VM_OUT/c_up.out 'd["first_format"]')" = True
check c_mounted grep -q "^/dev/mapper/cfg /mnt/cfg ext4 " /proc/mounts
check c_stripe_two sh -c 'dmsetup table cfg | grep -q " striped 2 1024 "'
check c_write sh -c 'echo "$CANARY" > /mnt/cfg/canary && sync'
check c_down "$SECRETFS" down --config /run/cfg.toml
check c_down_closed nothing_open cfg
record c_reopen "$SECRETFS" up --config /run/cfg.toml --json
check c_reopen_ok test "$(rc_of c_reopen)" = 0
check c_reopen_members test "$(json $VM_OUT/c_reopen.out 'd["members"]')" = "['{c0}', '{c1}']"
check c_reopen_not_formatted test "$(json $VM_OUT/c_reopen.out 'd["first_format"]')" = False
check c_intact grep -qx "$CANARY" /mnt/cfg/canary
check c_down2 "$SECRETFS" down --config /run/cfg.toml
"#
        ),
    );

    // N. Two NVMe disks under --disk auto (the virtio disks above are not
    //    instance store, so auto leaves them alone).
    for serial in ["n0", "n1"] {
        let p = dir.join(format!("{serial}.img"));
        vm::sparse_file(&p, 64 * MIB);
        disks.push(Disk::nvme(&p, serial));
    }
    checks(
        &mut s,
        r#"
record n_up up --disk auto --json
check n_up_ok test "$(rc_of n_up)" = 0
check n_two_members test "$(json $VM_OUT/n_up.out 'len(d["members"])')" = 2
check n_members_nvme test "$(json $VM_OUT/n_up.out 'all(m.startswith("/dev/nvme") for m in d["members"])')" = True
check n_first_format test "$(json $VM_OUT/n_up.out 'd["first_format"]')" = True
check n_mounted grep -q "^/dev/mapper/secretfs /mnt/secretfs ext4 " /proc/mounts
check n_stripe_two sh -c 'dmsetup table secretfs | grep -q " striped 2 1024 "'
check n_write sh -c 'echo "$CANARY" > /mnt/secretfs/canary && sync'
check n_down "$SECRETFS" down
check n_down_closed nothing_open secretfs
record n_reopen up --disk auto --json
check n_reopen_ok test "$(rc_of n_reopen)" = 0
check n_reopen_two test "$(json $VM_OUT/n_reopen.out 'len(d["members"])')" = 2
check n_reopen_not_formatted test "$(json $VM_OUT/n_reopen.out 'd["first_format"]')" = False
check n_intact grep -qx "$CANARY" /mnt/secretfs/canary
check n_status to "$VM_OUT/n_status.json" "$SECRETFS" status --json
check n_down2 "$SECRETFS" down
"#,
    );

    let mut spec = VmSpec::new("set-edges", &s);
    spec.disks = disks;
    spec.timeout = Duration::from_secs(900);
    let run = vm::run(&spec);
    report(&run);
    run.assert_checks(&expected.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.exit_code, Some(0), "{}", run.console_tail(60));

    // N: status shows the two NVMe members, open, in member order.
    let st = read_json(&run, "n_status.json");
    let members = st["set"]["members"].as_array().expect("set members");
    assert_eq!(members.len(), 2, "{st}");
    for (i, m) in members.iter().enumerate() {
        assert_eq!(m["index"], i, "{st}");
        assert_eq!(m["state"], "open", "{st}");
        assert!(m["serial"].as_str().unwrap().starts_with('n'), "{st}");
    }
}
