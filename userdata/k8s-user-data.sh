#!/bin/bash
# EC2 user data for an EKS or Karpenter node (AL2023, nodeadm): the shell
# part of a MIME multipart user data, before the NodeConfig part (see
# doc/kubernetes.md). It installs secretfs, configures it, links it as
# /usr/local/sbin/setup-local-disks (nodeadm runs that name, and systemd's
# PATH finds it before the AMI's /usr/bin one) and brings the volume up
# now. With localStorage.strategy RAID0 (or Karpenter's
# instanceStorePolicy: RAID0), nodeadm-run.service then runs it: every
# instance-store disk is one encrypted XFS volume at /mnt/k8s-disks/0, with
# /var/lib/kubelet, /var/lib/containerd, /var/lib/soci-snapshotter-grpc and
# /var/log/pods bound onto it, before containerd and kubelet start. On
# every later boot secretfs.service opens the volume first; nodeadm-run,
# kubelet and containerd require it (they do not start without it).
#
# Edit the five settings below. The node role needs s3:GetObject on the
# binary and on the wrapped key (examples/iam-policy.json), and the key's
# policy must let it kms:Decrypt with the encryption context
# (examples/kms-key-policy.json). Any failed step stops the script.
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
# Every instance-store NVMe disk, as one striped volume.
disk = "auto"
# nodeadm asks for DIR/0 (--dir, default /mnt/k8s-disks): the same here.
mount = "/mnt/k8s-disks/0"
# The filesystem EKS's own script makes.
fs = "xfs"
timeout = "5m"
TOML

# While the volume is not mounted, nothing can write into the bare mount
# point on the root disk.
mkdir -p /mnt/k8s-disks/0
mountpoint -q /mnt/k8s-disks/0 || chattr +i /mnt/k8s-disks/0 2>/dev/null || true

# The unit runs `secretfs up` on every boot, before nodeadm-run.service,
# kubelet.service and containerd.service, which require it; the link is
# what nodeadm runs. Enabled and started now. A failure fails user data.
/usr/local/bin/secretfs install-unit --k8s-disks --now
# Exits 6 (and fails user data) unless the volume is open and mounted.
/usr/local/bin/secretfs status
