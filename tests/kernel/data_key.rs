//! Data keys in the header (`up --kms-key`), in a real kernel against the
//! local KMS: no S3 object exists in this test at all; every volume's key
//! is made by KMS GenerateDataKey and kept wrapped in its own token.
//!
//! Boot 1 (instance A): first format (token version 3 with the wrapped key,
//! PBKDF2 slot); data written; down and up again from the token alone; a
//! wrong encryption context (a value differs; a pair missing, named by
//! the keys the token records) and a passphrase file are refused with exit
//! 4 and the header untouched; a second volume's token replaced by a copy of
//! the first's (with the second's UUID) does not decrypt (exit 4); a
//! two-member set gets one data key, scoped to the set, in both tokens
//! (version 5), and a boot decrypts it once (KMS calls counted between
//! marks in the proxy's log), and so does a set of eight loop-device
//! members (one GenerateDataKey, one Decrypt to re-open); a set made with a key per member, as
//! earlier releases made it, re-opens (a Decrypt per member) and `rotate`
//! moves it to one key (then one Decrypt); that set's record copied into
//! a member of the first set is refused (exit 4, headers unchanged); a volume bound to the
//! instance (`--bind-instance`) re-opens; a blanked disk (stop/start) gets
//! a new volume and a new wrapped key. `rotate`: a new data key in a new
//! slot, the old slot destroyed, the volume still mounted, data intact
//! after down and up; the old data key (its token put back) opens no slot;
//! killed after each of its steps (five points), the volume opens with one of the two
//! keys, data intact, and `rotate` again ends with one slot and a settled
//! token; a set rotates to one new key for all its members. The operator's key pins the header:
//! after the first volume is re-wrapped to the other KMS key, `up` with
//! the first key configured (by alias, and by ARN) is refused (exit 4,
//! both keys named, header unchanged); it opens with the other key
//! configured. `rotate --new-kms-key` and `rewrap` to a third key whose
//! Decrypt the role lacks (a proxy denies it; GenerateDataKey and
//! ReEncrypt to it work) stop with exit 4 naming kms:Decrypt, the header
//! unchanged, and the old key still opens. `rewrap` moves the first volume's and
//! the bound volume's data keys to the other KMS key, slot and data
//! unchanged. The rotation runs at `SECRETFS_LOG=trace` with the SDK's
//! body-logging switches on: the old and the new data key (decrypted on
//! the host by the local KMS, kept in memory) appear in no form in its
//! stderr or on the console.
//! Between the boots the first KMS key is disabled.
//! Boot 2 (instance B, the same disk images): the bound volume is refused
//! (exit 4, naming the instance binding its token records); the stop/start
//! volume, still under the disabled key, is refused (exit 4, the key named
//! as disabled); the
//! re-wrapped unbound one opens with its data intact.
//! After each power-off the canary is searched for in every raw image.

use std::time::Duration;

use crate::common::aws::{self, FakeImds, Proxy};
use crate::common::vm::{self, image_contains, report, Disk, VmRun, VmSpec};
use crate::common::LocalAws;

const CONTEXT: &str = "team=db";
const OTHER_INSTANCE: &str = "i-0fedcba9876543210";
/// Where `rotate` is killed, one run each: after the next key is recorded,
/// after its slot is written, after that slot was checked, after the token
/// switched to it, after the old slot was destroyed.
const KILL_POINTS: [&str; 5] = [
    "rotate_make_next",
    "rotate_slot_written",
    "rotate_add_slot",
    "rotate_switch",
    "rotate_slot_destroyed",
];

fn guest_lib(alias: &str, other: &str, canary: &str) -> String {
    format!(
        r#"
export CANARY={canary}
up() {{ "$SECRETFS" up --kms-key {alias} --encryption-context {CONTEXT} --timeout 60s "$@"; }}
# The volumes re-wrapped to the other KMS key open with it configured.
up_other() {{ "$SECRETFS" up --kms-key {other} --encryption-context {CONTEXT} --timeout 60s "$@"; }}
token() {{ for i in 0 1 2 3; do cryptsetup token export --token-id $i "$1" 2>/dev/null; done | grep '"secretfs"'; }}
# Replaces the secretfs token of $1 with the JSON in $2.
put_token() {{ for i in 0 1 2 3; do cryptsetup token export --token-id $i "$1" 2>/dev/null | grep -q '"secretfs"' && cryptsetup token remove --token-id $i "$1"; done; cryptsetup token import --json-file "$2" "$1"; }}
# A marker request in the KMS emulator's log (through the proxy): the host
# counts the KMS calls between two marks.
mark() {{ curl -s -o /dev/null "$VM_ENDPOINT/secretfs-mark/$1" || true; }}
field() {{ token "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$2"; }}
uuid() {{ cryptsetup luksUUID "$1"; }}
hdr() {{ head -c 2M "$1" | sha256sum; }}
rot() {{ "$SECRETFS" rotate --encryption-context {CONTEXT} --timeout 60s "$@"; }}
rot_loud() {{ SECRETFS_LOG=trace LOG_SENSITIVE_BODIES=true LOG_SIGNABLE_BODY=true "$SECRETFS" rotate --encryption-context {CONTEXT} --timeout 60s "$@"; }}
slots() {{ cryptsetup luksDump "$1" | grep -cE '^  [0-9]+: luks2'; }}
settled() {{ test "$(slots "$1")" = 1 && test "$(field "$1" '"next_key" in d or "retire_slot" in d')" = False; }}
same_data() {{ test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "$(cat /run/out/data.sum)"; }}
"#
    )
}

fn boot(
    name: &str,
    aws: &LocalAws,
    imds: Option<&FakeImds>,
    proxy: Option<&Proxy>,
    script: String,
    disks: Vec<Disk>,
) -> VmRun {
    let mut spec = VmSpec::new(name, &script);
    spec.disks = disks;
    aws.attach(&mut spec);
    if let Some(p) = proxy {
        spec.endpoint_port = Some(p.port);
    }
    if let Some(i) = imds {
        spec.imds_port = Some(i.port);
    }
    spec.timeout = Duration::from_secs(900);
    let run = vm::run(&spec);
    report(&run);
    run
}

#[test]
fn vm_data_keys_in_the_header() {
    let aws = LocalAws::start();
    let dir = vm::work_dir("data-key");
    let imgs: Vec<_> = ["a", "b", "c", "d", "m0", "m1", "t0", "t1"]
        .iter()
        .map(|n| {
            let p = dir.join(format!("{n}.img"));
            vm::sparse_file(&p, 256 << 20);
            p
        })
        .collect();
    let disks = || imgs.iter().map(Disk::virtio).collect::<Vec<_>>();
    let canary = aws::hex(&aws::random_bytes(16));
    let lib = guest_lib(&aws.moto.alias, &aws.moto.other_key_arn, &canary);
    // Boot 1 reaches KMS through a proxy that denies Decrypt under a third
    // key (and nothing else).
    let denied = aws.moto.create_key("Decrypt denied by the proxy");
    let proxy = Proxy::start(aws.moto.port, &["--deny-kms", &format!("Decrypt:{denied}")]);

    // Boot 1: vda (A), vdb (B), vdc (bound), vdd (stop/start), vde+vdf (set
    // s), vdg+vdh (set t, made with a key per member as before).
    let s1 = lib.clone()
        + r#"
check up_first to "$VM_OUT/up.json" up --disk /dev/vda --json
check first_format python3 -c 'import json; assert json.load(open("/run/out/up.json"))["first_format"]'
check token_v3 test "$(field /dev/vda 'd["version"]')" = 3
check token_has_key test -n "$(field /dev/vda 'd["data_key"]["ciphertext"]')"
check token_key_arn test "$(field /dev/vda 'd["data_key"]["kms_key"]' | grep -c '^arn:aws:kms:')" = 1
check token_unbound test "$(field /dev/vda 'd["data_key"]["instance"]')" = False
check status_human to /run/status.txt "$SECRETFS" status
check status_names_the_key grep -q "its own data key in the header, wrapped by arn:aws:kms:" /run/status.txt
check slot_pbkdf2 sh -c 'cryptsetup luksDump /dev/vda | grep -q "PBKDF: *pbkdf2"'
check write sh -c 'for i in $(seq 2048); do echo "$CANARY"; done > /mnt/secretfs/canary.txt && head -c 16M /dev/urandom > /mnt/secretfs/data && sha256sum /mnt/secretfs/data | cut -d" " -f1 > /run/out/data.sum && sync'
check down "$SECRETFS" down
check reopen up --disk /dev/vda
check reopen_intact sh -c 'test "$(sha256sum /mnt/secretfs/data | cut -d" " -f1)" = "$(cat /run/out/data.sum)"'
check down2 "$SECRETFS" down
H=$(hdr /dev/vda)
to2 /dev/null /run/ctx.err "$SECRETFS" up --disk /dev/vda --kms-key ALIAS --encryption-context team=web --timeout 20s; echo $? > /run/ctx.rc
cat /run/ctx.err
check wrong_context_exit_4 test "$(cat /run/ctx.rc)" = 4
check wrong_context_one_error test "$(grep -c '^secretfs: error:' /run/ctx.err)" = 1
check wrong_context_names_it grep -q 'a value of the --encryption-context differs from when it was made (keys \[team\])' /run/ctx.err
to2 /dev/null /run/nopair.err "$SECRETFS" up --disk /dev/vda --kms-key ALIAS --timeout 20s; echo $? > /run/nopair.rc
cat /run/nopair.err
check missing_pair_exit_4 test "$(cat /run/nopair.rc)" = 4
check missing_pair_names_it grep -q 'made with the keys \[team\], this run gives \[\]' /run/nopair.err
check wrong_context_not_mounted sh -c '! grep -q " /mnt/secretfs " /proc/mounts'
check wrong_context_header_same test "$(hdr /dev/vda)" = "$H"
head -c 64 /dev/urandom > /run/other.key
to2 /dev/null /run/pf.err "$SECRETFS" up --disk /dev/vda --passphrase-file /run/other.key; echo $? > /run/pf.rc
cat /run/pf.err
check passphrase_refused_exit_4 test "$(cat /run/pf.rc)" = 4
check passphrase_refused_says_why grep -q "keeps its own data key" /run/pf.err
check passphrase_header_same test "$(hdr /dev/vda)" = "$H"
check up_b up --disk /dev/vdb --name b --mount /mnt/b
check b_own_key test "$(field /dev/vda 'd["data_key"]["ciphertext"]')" != "$(field /dev/vdb 'd["data_key"]["ciphertext"]')"
check down_b "$SECRETFS" down --name b
# B's token replaced by A's, with B's UUID: the wrapped key is A's.
token /dev/vda | python3 -c 'import json,sys; d=json.load(sys.stdin); d["volume"]=sys.argv[1]; print(json.dumps(d))' "$(uuid /dev/vdb)" > /run/copied.json
for i in 0 1 2 3; do cryptsetup token export --token-id $i /dev/vdb 2>/dev/null | grep -q '"secretfs"' && cryptsetup token remove --token-id $i /dev/vdb; done
check token_copied cryptsetup token import --json-file /run/copied.json /dev/vdb
HB=$(hdr /dev/vdb)
to2 /dev/null /run/copy.err up --disk /dev/vdb --name b --mount /mnt/b; echo $? > /run/copy.rc
cat /run/copy.err
check copied_token_exit_4 test "$(cat /run/copy.rc)" = 4
check copied_token_kms_says_no grep -q -i "ciphertext\|context" /run/copy.err
check copied_token_header_same test "$(hdr /dev/vdb)" = "$HB"
mark set_format_begin
check up_set to "$VM_OUT/set.json" up --disk /dev/vde --disk /dev/vdf --name s --mount /mnt/s --json
mark set_format_end
# A set is one volume with one data key: every member carries its record.
check set_one_key test "$(field /dev/vde 'd["data_key"]["ciphertext"]')" = "$(field /dev/vdf 'd["data_key"]["ciphertext"]')"
check set_key_scope test "$(field /dev/vde 'd["data_key"]["scope"]')" = set
check set_token_v5 test "$(field /dev/vdf 'd["version"]')" = 5
check set_status sh -c '"$SECRETFS" status --name s | grep -q "the data key of set"'
check set_write sh -c 'echo "$CANARY" > /mnt/s/canary && sync'
check set_down "$SECRETFS" down --name s
mark set_reopen_begin
check set_reopen up --disk /dev/vdf --disk /dev/vde --name s --mount /mnt/s
mark set_reopen_end
check set_intact grep -q "$CANARY" /mnt/s/canary
check set_down2 "$SECRETFS" down --name s
# Eight members (loop devices over sparse files in guest RAM): one
# GenerateDataKey to make the set, one Decrypt to re-open it.
E8=""
for i in 0 1 2 3 4 5 6 7; do truncate -s 64M /run/e8-$i.img; E8="$E8 $(losetup -f --show /run/e8-$i.img)"; done
E8ARGS=$(for l in $E8; do printf -- '--disk %s ' "$l"; done)
mark e8_format_begin
check e8_up up $E8ARGS --name e8 --mount /mnt/e8
mark e8_format_end
check e8_one_key test "$(for l in $E8; do field "$l" 'd["data_key"]["ciphertext"]'; done | sort -u | wc -l)" = 1
check e8_down "$SECRETFS" down --name e8
mark e8_reopen_begin
check e8_reopen up $E8ARGS --name e8 --mount /mnt/e8
mark e8_reopen_end
check e8_down2 "$SECRETFS" down --name e8
# A set made with a data key per member (as releases before made it)
# keeps opening, and rotate moves it to one key.
check old_set_up env SECRETFS_FAULT=set_key:legacy "$SECRETFS" up --kms-key ALIAS --encryption-context team=db --timeout 60s --disk /dev/vdg --disk /dev/vdh --name t --mount /mnt/t
check old_set_v3 test "$(field /dev/vdg 'd["version"]')" = 3
check old_set_keys_differ test "$(field /dev/vdg 'd["data_key"]["ciphertext"]')" != "$(field /dev/vdh 'd["data_key"]["ciphertext"]')"
check old_set_status sh -c '"$SECRETFS" status --name t | grep -q "this member.s own data key"'
check old_set_write sh -c 'echo "$CANARY" > /mnt/t/canary && sync'
check old_set_down "$SECRETFS" down --name t
mark old_reopen_begin
check old_set_reopen up --disk /dev/vdg --disk /dev/vdh --name t --mount /mnt/t
mark old_reopen_end
check old_set_intact grep -q "$CANARY" /mnt/t/canary
check old_set_rotate rot --name t
check old_set_one_key test "$(field /dev/vdg 'd["data_key"]["ciphertext"]')" = "$(field /dev/vdh 'd["data_key"]["ciphertext"]')"
check old_set_scope test "$(field /dev/vdh 'd["data_key"]["scope"]')" = set
check old_set_settled settled /dev/vdg
check old_set_settled2 settled /dev/vdh
check old_set_down2 "$SECRETFS" down --name t
mark old_rotated_begin
check old_set_reopen2 up --disk /dev/vdg --disk /dev/vdh --name t --mount /mnt/t
mark old_rotated_end
check old_set_intact2 grep -q "$CANARY" /mnt/t/canary
check old_set_down3 "$SECRETFS" down --name t
# Set t's record copied into the token of a member of set s: its context
# names set s, so KMS refuses it; nothing changes.
token /dev/vde > /run/vde.json
token /dev/vde | python3 -c 'import json,sys; d=json.load(sys.stdin); d["data_key"]=json.loads(sys.argv[1]); print(json.dumps(d))' "$(token /dev/vdg | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data_key"]))')" > /run/foreign.json
check foreign_record_put put_token /dev/vde /run/foreign.json
HE=$(hdr /dev/vde); HF=$(hdr /dev/vdf)
to2 /dev/null /run/foreign.err up --disk /dev/vde --disk /dev/vdf --name s --mount /mnt/s; echo $? > /run/foreign.rc
cat /run/foreign.err
check foreign_record_exit_4 test "$(cat /run/foreign.rc)" = 4
check foreign_record_kms_says_no grep -q -i "ciphertext\|context" /run/foreign.err
check foreign_record_headers_same test "$(hdr /dev/vde)" = "$HE" -a "$(hdr /dev/vdf)" = "$HF"
check foreign_record_not_open test ! -e /dev/mapper/s
check foreign_record_back put_token /dev/vde /run/vde.json
check up_bound up --disk /dev/vdc --name c --mount /mnt/c --bind-instance
check bound_token test "$(field /dev/vdc 'd["data_key"]["instance"]')" = True
check bound_token_no_arn sh -c '! cryptsetup token export --token-id 0 /dev/vdc | grep -q i-0123456789abcdef0'
check bound_write sh -c 'echo "$CANARY" > /mnt/c/canary && sync'
check bound_down "$SECRETFS" down --name c
check bound_reopen up --disk /dev/vdc --name c --mount /mnt/c
check bound_down2 "$SECRETFS" down --name c
check up_d up --disk /dev/vdd --name d --mount /mnt/d
U1=$(uuid /dev/vdd); K1=$(field /dev/vdd 'd["data_key"]["ciphertext"]')
check down_d "$SECRETFS" down --name d
# Stop/start: the instance-store disk comes back blank.
check blank_d dd if=/dev/zero of=/dev/vdd bs=1M count=256 conv=fsync status=none
check restart_d up --disk /dev/vdd --name d --mount /mnt/d
check restart_new_volume test "$(uuid /dev/vdd)" != "$U1"
check restart_new_key test "$(field /dev/vdd 'd["data_key"]["ciphertext"]')" != "$K1"
check down_d2 "$SECRETFS" down --name d
# Rotation: a new data key in a new slot, the old slot gone, data intact.
check rot_up up --disk /dev/vda
token /dev/vda > "$VM_OUT/old-token.json"
K0=$(field /dev/vda 'd["data_key"]["ciphertext"]')
check rotate to2 "$VM_OUT/rotate.json" "$VM_OUT/rotate-trace.err" rot_loud --json
check rotate_new_key test "$(field /dev/vda 'd["data_key"]["ciphertext"]')" != "$K0"
check rotate_settled settled /dev/vda
check rotate_kept_mounted grep -q " /mnt/secretfs " /proc/mounts
check rotate_down "$SECRETFS" down
check rotate_reopen up --disk /dev/vda
check rotate_intact same_data
check rotate_down2 "$SECRETFS" down
# The old data key (its token put back) opens nothing any more.
token /dev/vda > "$VM_OUT/new-token.json"
retoken() { for i in 0 1 2 3; do cryptsetup token export --token-id $i /dev/vda 2>/dev/null | grep -q '"secretfs"' && cryptsetup token remove --token-id $i /dev/vda; done; cryptsetup token import --json-file "$1" /dev/vda; }
check old_token_back retoken "$VM_OUT/old-token.json"
to2 /dev/null /run/old.err up --disk /dev/vda; echo $? > /run/old.rc
cat /run/old.err
check old_key_exit_4 test "$(cat /run/old.rc)" = 4
check old_key_opens_no_slot grep -q "no key slot matches" /run/old.err
check new_token_back retoken "$VM_OUT/new-token.json"
# A kill after each step of rotate: up opens with one of the two keys, the
# data is intact, and rotate again finishes with one slot.
for p in POINTS; do
  check "up_before_$p" up --disk /dev/vda
  SECRETFS_FAULT=$p:kill rot 2> /dev/null; echo $? > /run/k.rc
  check "killed_at_$p" test "$(cat /run/k.rc)" = 137
  check "down_after_$p" "$SECRETFS" down
  check "opens_after_$p" up --disk /dev/vda
  check "intact_after_$p" same_data
  check "rotate_again_after_$p" rot
  check "settled_after_$p" settled /dev/vda
  check "down_again_after_$p" "$SECRETFS" down
done
# A new KMS key whose Decrypt this role lacks (the proxy denies it, while
# GenerateDataKey and ReEncrypt to it work): rotate and rewrap stop before
# any change, naming the permission, and the old key still opens.
check denied_up up --disk /dev/vda
H=$(hdr /dev/vda)
to2 /dev/null /run/deny_rot.err rot --new-kms-key DENIED; echo $? > /run/deny_rot.rc
cat /run/deny_rot.err
check denied_rotate_exit_4 test "$(cat /run/deny_rot.rc)" = 4
check denied_rotate_names_it sh -c 'grep -q "needs kms:Decrypt on that key" /run/deny_rot.err && grep -qF "DENIED" /run/deny_rot.err'
check denied_rotate_header_same test "$(hdr /dev/vda)" = "$H"
to2 /dev/null /run/deny_rw.err "$SECRETFS" rewrap --new-kms-key DENIED --encryption-context team=db --timeout 60s; echo $? > /run/deny_rw.rc
cat /run/deny_rw.err
check denied_rewrap_exit_4 test "$(cat /run/deny_rw.rc)" = 4
check denied_rewrap_names_it sh -c 'grep -q "needs kms:Decrypt on that key" /run/deny_rw.err && grep -qF "DENIED" /run/deny_rw.err'
check denied_rewrap_header_same test "$(hdr /dev/vda)" = "$H"
check denied_down "$SECRETFS" down
check denied_old_key_opens up --disk /dev/vda
check denied_intact same_data
check denied_down2 "$SECRETFS" down
# Re-wrap under the other KMS key: ciphertext and key change, slot and data stay.
check rewrap_up up --disk /dev/vda
S0=$(cryptsetup luksDump /dev/vda | grep -A1 '^Keyslots:' | tail -1)
check rewrap "$SECRETFS" rewrap --new-kms-key OTHER --encryption-context team=db --timeout 60s
check rewrap_key test "$(field /dev/vda 'd["data_key"]["kms_key"]')" = OTHER
check rewrap_same_slot test "$(cryptsetup luksDump /dev/vda | grep -A1 '^Keyslots:' | tail -1)" = "$S0"
check rewrap_down "$SECRETFS" down
# The operator's key pins the header: with the first key configured, the
# volume now under the other key is refused, both keys named.
H=$(hdr /dev/vda)
to2 /dev/null /run/pin.err up --disk /dev/vda; echo $? > /run/pin.rc
cat /run/pin.err
check pinned_exit_4 test "$(cat /run/pin.rc)" = 4
check pinned_names_both sh -c 'grep -qF "OTHER" /run/pin.err && grep -q "under the configured kms-key ALIAS" /run/pin.err'
check pinned_header_same test "$(hdr /dev/vda)" = "$H"
check_fails pinned_not_mounted grep -q " /mnt/secretfs " /proc/mounts
to2 /dev/null /run/pin2.err "$SECRETFS" up --disk /dev/vda --kms-key KEYARN --encryption-context team=db --timeout 60s; echo $? > /run/pin2.rc
cat /run/pin2.err
check pinned_arn_exit_4 test "$(cat /run/pin2.rc)" = 4
check pinned_arn_says grep -q "not the configured kms-key KEYARN" /run/pin2.err
check pinned_arn_header_same test "$(hdr /dev/vda)" = "$H"
check rewrap_reopen up_other --disk /dev/vda
check rewrap_intact same_data
check rewrap_down2 "$SECRETFS" down
check rewrap_c_up up --disk /dev/vdc --name c --mount /mnt/c
check rewrap_c "$SECRETFS" rewrap --name c --new-kms-key OTHER --encryption-context team=db --timeout 60s
check rewrap_c_down "$SECRETFS" down --name c
# A set rotates member by member, all to one new key.
check rot_set_up up --disk /dev/vde --disk /dev/vdf --name s --mount /mnt/s
E0=$(field /dev/vde 'd["data_key"]["ciphertext"]')
mark rot_set_begin
check rot_set rot --name s
mark rot_set_end
check rot_set_new_keys test "$(field /dev/vde 'd["data_key"]["ciphertext"]')" != "$E0"
check rot_set_one_key test "$(field /dev/vde 'd["data_key"]["ciphertext"]')" = "$(field /dev/vdf 'd["data_key"]["ciphertext"]')"
check rot_set_settled settled /dev/vde
check rot_set_settled2 settled /dev/vdf
check rot_set_down "$SECRETFS" down --name s
check rot_set_reopen up --disk /dev/vde --disk /dev/vdf --name s --mount /mnt/s
check rot_set_intact grep -q "$CANARY" /mnt/s/canary
check rot_set_down2 "$SECRETFS" down --name s
"#;
    let s1 = s1
        .replace("ALIAS", &aws.moto.alias)
        .replace("OTHER", &aws.moto.other_key_arn)
        .replace("KEYARN", &aws.moto.key_arn)
        .replace("DENIED", &denied)
        .replace("POINTS", &KILL_POINTS.join(" "));
    let run1 = boot("data-key-1", &aws, None, Some(&proxy), s1, disks());
    run1.assert_checks(&[
        "up_first",
        "first_format",
        "token_v3",
        "token_has_key",
        "token_key_arn",
        "token_unbound",
        "status_human",
        "status_names_the_key",
        "slot_pbkdf2",
        "write",
        "down",
        "reopen",
        "reopen_intact",
        "down2",
        "wrong_context_exit_4",
        "wrong_context_one_error",
        "wrong_context_names_it",
        "missing_pair_exit_4",
        "missing_pair_names_it",
        "wrong_context_not_mounted",
        "wrong_context_header_same",
        "passphrase_refused_exit_4",
        "passphrase_refused_says_why",
        "passphrase_header_same",
        "up_b",
        "b_own_key",
        "down_b",
        "token_copied",
        "copied_token_exit_4",
        "copied_token_kms_says_no",
        "copied_token_header_same",
        "up_set",
        "set_one_key",
        "set_key_scope",
        "set_token_v5",
        "set_status",
        "set_write",
        "set_down",
        "set_reopen",
        "set_intact",
        "set_down2",
        "e8_up",
        "e8_one_key",
        "e8_down",
        "e8_reopen",
        "e8_down2",
        "old_set_up",
        "old_set_v3",
        "old_set_keys_differ",
        "old_set_status",
        "old_set_write",
        "old_set_down",
        "old_set_reopen",
        "old_set_intact",
        "old_set_rotate",
        "old_set_one_key",
        "old_set_scope",
        "old_set_settled",
        "old_set_settled2",
        "old_set_down2",
        "old_set_reopen2",
        "old_set_intact2",
        "old_set_down3",
        "foreign_record_put",
        "foreign_record_exit_4",
        "foreign_record_kms_says_no",
        "foreign_record_headers_same",
        "foreign_record_not_open",
        "foreign_record_back",
        "up_bound",
        "bound_token",
        "bound_token_no_arn",
        "bound_write",
        "bound_down",
        "bound_reopen",
        "bound_down2",
        "up_d",
        "down_d",
        "blank_d",
        "restart_d",
        "restart_new_volume",
        "restart_new_key",
        "down_d2",
        "rot_up",
        "rotate",
        "rotate_new_key",
        "rotate_settled",
        "rotate_kept_mounted",
        "rotate_down",
        "rotate_reopen",
        "rotate_intact",
        "rotate_down2",
        "old_token_back",
        "old_key_exit_4",
        "old_key_opens_no_slot",
        "new_token_back",
    ]);
    let per_kill = [
        "up_before",
        "killed_at",
        "down_after",
        "opens_after",
        "intact_after",
        "rotate_again_after",
        "settled_after",
        "down_again_after",
    ];
    let kill_checks: Vec<String> = KILL_POINTS
        .iter()
        .flat_map(|p| per_kill.iter().map(move |c| format!("{c}_{p}")))
        .collect();
    run1.assert_checks(&kill_checks.iter().map(String::as_str).collect::<Vec<_>>());
    run1.assert_checks(&[
        "denied_up",
        "denied_rotate_exit_4",
        "denied_rotate_names_it",
        "denied_rotate_header_same",
        "denied_rewrap_exit_4",
        "denied_rewrap_names_it",
        "denied_rewrap_header_same",
        "denied_down",
        "denied_old_key_opens",
        "denied_intact",
        "denied_down2",
        "rewrap_up",
        "rewrap",
        "rewrap_key",
        "rewrap_same_slot",
        "rewrap_down",
        "pinned_exit_4",
        "pinned_names_both",
        "pinned_header_same",
        "pinned_not_mounted",
        "pinned_arn_exit_4",
        "pinned_arn_says",
        "pinned_arn_header_same",
        "rewrap_reopen",
        "rewrap_intact",
        "rewrap_down2",
        "rewrap_c_up",
        "rewrap_c",
        "rewrap_c_down",
        "rot_set_up",
        "rot_set",
        "rot_set_new_keys",
        "rot_set_one_key",
        "rot_set_settled",
        "rot_set_settled2",
        "rot_set_down",
        "rot_set_reopen",
        "rot_set_intact",
        "rot_set_down2",
    ]);
    let rotated: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run1.out_dir.join("rotate.json")).expect("rotate.json"),
    )
    .expect("rotate --json printed JSON");
    assert_eq!(rotated["members"][0]["old_slot"], 0, "{rotated}");
    assert_eq!(rotated["members"][0]["slot"], 1, "{rotated}");
    // KMS calls, in the log of the proxy in front of the emulator: a new
    // set gets one data key, which its open decrypts once (the proof that
    // the role can re-open it, before any data is written), and every
    // later boot decrypts it once; a set made with a key per member
    // decrypts each until rotate moves it to one key.
    let log = proxy.log();
    let calls = |mark: &str, action: &str| kms_calls_between(&log, mark, action);
    for (mark, action, want) in [
        ("set_format", "GenerateDataKey", 1),
        ("set_format", "Decrypt", 1),
        ("set_reopen", "Decrypt", 1),
        ("e8_format", "GenerateDataKey", 1),
        ("e8_format", "Decrypt", 1),
        ("e8_reopen", "Decrypt", 1),
        ("old_reopen", "Decrypt", 2),
        ("old_rotated", "Decrypt", 1),
        ("rot_set", "GenerateDataKey", 1),
        // The set's current key once, the new one once (its proof; the
        // second member takes it from memory).
        ("rot_set", "Decrypt", 2),
    ] {
        assert_eq!(
            calls(mark, action),
            want,
            "{action} calls between the {mark} marks"
        );
    }
    assert_eq!(run1.exit_code, Some(0), "{}", run1.console_tail(60));
    for img in &imgs {
        assert!(
            !image_contains(img, &canary),
            "canary in the clear in {}",
            img.display()
        );
    }

    // Hygiene over rotate at trace level with the SDK's body switches on:
    // neither the old nor the new data key (decrypted here by the local
    // KMS, held only in memory) is in its stderr or on the console.
    let trace = std::fs::read(run1.out_dir.join("rotate-trace.err")).expect("rotate-trace.err");
    assert!(
        String::from_utf8_lossy(&trace).contains("DEBUG"),
        "rotate logged no debug line: SECRETFS_LOG=trace did not apply"
    );
    for name in ["old-token.json", "new-token.json"] {
        let t: serde_json::Value = serde_json::from_slice(
            &std::fs::read(run1.out_dir.join(name)).expect("an exported token"),
        )
        .expect("token JSON");
        let uuid = t["volume"].as_str().expect("volume");
        let ciphertext = t["data_key"]["ciphertext"].as_str().expect("ciphertext");
        let (team, db) = CONTEXT.split_once('=').unwrap();
        let (_, key) = aws.moto.decrypt(
            ciphertext.as_bytes(),
            &[(team, db), ("secretfs:volume", uuid)],
        );
        assert_eq!(key.len(), 64, "{name}: a data key of {} bytes", key.len());
        for (what, hay) in [
            ("rotate's stderr", &trace),
            ("the console", &run1.console.as_bytes().to_vec()),
        ] {
            let leaked = aws::leaked_forms(hay, &key);
            assert!(
                leaked.is_empty(),
                "the data key of {name} is in {what} (forms {leaked:?} of raw, hex, HEX, base64)"
            );
        }
    }

    // Between the boots the first KMS key is disabled: the re-wrapped
    // volumes open under the other key, one left under the first does not.
    aws.moto.disable_key(&aws.moto.key_id);

    // Boot 2: another instance (another instance id), the same disks.
    let other = FakeImds::start_with("ok", &["--instance-id", OTHER_INSTANCE]);
    let sum = std::fs::read_to_string(run1.out_dir.join("data.sum")).expect("boot 1's data.sum");
    assert_eq!(sum.trim().len(), 64, "data.sum: {sum:?}");
    let s2 = lib
        + &format!("echo {} > /run/out/data.sum\n", sum.trim())
        + r#"
to2 /dev/null /run/bound.err up_other --disk /dev/vdc --name c --mount /mnt/c; echo $? > /run/bound.rc
cat /run/bound.err
check bound_elsewhere_exit_4 test "$(cat /run/bound.rc)" = 4
check bound_elsewhere_not_mounted sh -c '! grep -q " /mnt/c " /proc/mounts'
check bound_elsewhere_says_bound grep -q 'bound to the instance that made it' /run/bound.err
to2 /dev/null /run/disabled.err up --disk /dev/vdd --name d --mount /mnt/d; echo $? > /run/disabled.rc
cat /run/disabled.err
check disabled_key_exit_4 test "$(cat /run/disabled.rc)" = 4
check disabled_key_says_so grep -q 'that wraps its data key is disabled: enable it' /run/disabled.err
check unbound_opens up_other --disk /dev/vda
check unbound_intact same_data
check unbound_down "$SECRETFS" down
"#;
    let run2 = boot("data-key-2", &aws, Some(&other), None, s2, disks());
    run2.assert_checks(&[
        "bound_elsewhere_exit_4",
        "bound_elsewhere_not_mounted",
        "bound_elsewhere_says_bound",
        "disabled_key_exit_4",
        "disabled_key_says_so",
        "unbound_opens",
        "unbound_intact",
        "unbound_down",
    ]);
    assert_eq!(run2.exit_code, Some(0), "{}", run2.console_tail(60));
    assert!(
        other
            .log()
            .contains("/latest/dynamic/instance-identity/document"),
        "boot 2 never asked for the instance identity:\n{}",
        other.log()
    );
}

/// How many KMS `action` requests the proxy's log shows between the guest's
/// marks `MARK_begin` and `MARK_end`.
fn kms_calls_between(log: &str, mark: &str, action: &str) -> usize {
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("REQ ")).collect();
    let at = |end: &str| {
        let m = format!("/secretfs-mark/{mark}_{end} ");
        lines
            .iter()
            .position(|l| l.contains(&m))
            .unwrap_or_else(|| panic!("no mark {mark}_{end} in the proxy's log:\n{log}"))
    };
    let (begin, end) = (at("begin"), at("end"));
    let target = format!("target=TrentService.{action} ");
    lines[begin..end]
        .iter()
        .filter(|l| l.contains(&target))
        .count()
}
