#!/bin/bash
# EC2 user data: install secretfs, configure it, run it on every boot, and
# bring the volume up now. Paste as user data (it runs once, as root, on
# the first boot of the instance); the systemd unit it installs takes over
# on every later boot.
#
# Edit the five settings below. The instance role needs s3:GetObject on
# the binary and on the wrapped key (examples/iam-policy.json), and the
# key's policy must let it kms:Decrypt with the encryption context
# (examples/kms-key-policy.json). Any failed step stops the script (and
# fails cloud-init's user-data module): nothing after it runs.
set -euo pipefail

SECRETFS_BINARY=s3://my-artifacts/secretfs/secretfs-x86_64   # the release binary
SECRETFS_SHA256=0000000000000000000000000000000000000000000000000000000000000000  # its SHA-256 (from SHA256SUMS)
WRAPPED_KEY=s3://my-secrets/secretfs/volume-key.bin          # from `secretfs seal`
KMS_KEY_ID=alias/secretfs                                    # pins the key Decrypt may use
BUCKET_OWNER=123456789012                                    # the account owning both buckets

# The binary (not a secret) comes from S3 with the AWS CLI the AMI ships.
# `aws s3api get-object` (not `aws s3 cp`, whose high-level form has no
# --expected-bucket-owner in any CLI release) refuses a bucket another
# account owns; the checksum refuses any other file.
bucket=${SECRETFS_BINARY#s3://}
aws s3api get-object --bucket "${bucket%%/*}" --key "${bucket#*/}" \
  --expected-bucket-owner "$BUCKET_OWNER" /usr/local/bin/secretfs.new >/dev/null
echo "$SECRETFS_SHA256  /usr/local/bin/secretfs.new" | sha256sum --check --strict --quiet
install -m 0755 /usr/local/bin/secretfs.new /usr/local/bin/secretfs
rm -f /usr/local/bin/secretfs.new

install -d -m 0755 /etc/secretfs
cat > /etc/secretfs/secretfs.toml <<TOML
# secretfs settings; every key is also a flag of \`secretfs up\`.
wrapped-key = "$WRAPPED_KEY"
kms-key-id = "$KMS_KEY_ID"
expected-bucket-owner = "$BUCKET_OWNER"
encryption-context = { purpose = "secretfs" }
# Every instance-store NVMe disk (several become one striped volume);
# names change across stop/start, so let secretfs find them. On instance
# types with /dev/xvdb-style instance store, name the disks instead
# (disk = ["/dev/xvdb", "/dev/xvdc"]), or use a loop file:
#   file = "/var/lib/secretfs/volume.img"
#   size = "20G"
disk = "auto"
mount = "/mnt/secretfs"
timeout = "5m"
TOML

# While the volume is not mounted, nothing can write into the bare mount
# point on the root disk.
mkdir -p /mnt/secretfs
mountpoint -q /mnt/secretfs || chattr +i /mnt/secretfs 2>/dev/null || true

# The unit (built into the binary: userdata/secretfs.service) runs
# `secretfs up` on every boot; enabled and started now. A failure fails
# user data. Services that keep data on the volume: add
# `--requires NAME` for each (Requires= + After=secretfs.service).
/usr/local/bin/secretfs install-unit --now
# Exits 6 (and fails user data) unless the volume is open and mounted.
/usr/local/bin/secretfs status
