#!/usr/bin/env bash
# Builds the real-guest image: a Debian 12 root filesystem made with
# Debian's own tools (mmdebstrap) from the machine's configured Debian
# sources, holding what Debian's EC2 images hold (systemd, udev,
# systemd-networkd + -resolved with netplan, cloud-init, the AWS CLI,
# amazon-ec2-utils, cloud-guest-utils, sudo) plus the kernel, libcryptsetup,
# e2fsprogs and PostgreSQL.
#
#   build-image.sh OUT_DIR
#     -> OUT_DIR/root.img    ext4, no partition table (the guest's /dev/vda)
#        OUT_DIR/vmlinuz     the image's own kernel
#        OUT_DIR/initrd.img  and initramfs (initramfs-tools, MODULES=most)
#
# Left out of Debian's EC2 package set: openssh-server and chrony (nothing
# here logs in or needs the clock; first-boot SSH key generation alone costs
# tens of seconds under emulation).
#
# The test's own pieces in the image, all inert on their own (see
# tests/guest/README.md): /usr/local/sbin/secretfs-test-hook and its two
# units, which run what the test passes in with QEMU fw_cfg, and
# /usr/local/bin/aws, which adds --endpoint-url when AWS_ENDPOINT_URL is
# set (Debian 12's AWS CLI 2.9.19 does not read it).
set -euo pipefail
out=${1:?usage: build-image.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)

PACKAGES=(
  systemd systemd-sysv systemd-resolved udev dbus netplan.io
  cloud-init cloud-guest-utils awscli amazon-ec2-utils sudo
  linux-image-amd64 initramfs-tools
  libcryptsetup12 cryptsetup-bin e2fsprogs xfsprogs util-linux kmod
  curl ca-certificates postgresql
)

tmp=$(mktemp -d "${out%/}.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rootfs=$tmp/rootfs

# The machine's Debian sources (deb822), as apt on this machine uses them.
sources=/etc/apt/sources.list.d/debian.sources
[[ -f $sources ]] || sources=/etc/apt/sources.list

include=$(IFS=,; echo "${PACKAGES[*]}")
mmdebstrap --quiet --variant=minbase --include="$include" \
  --customize-hook="bash $here/customize.sh \"\$1\" $here" \
  bookworm "$rootfs" "$sources"

kver=$(ls "$rootfs/lib/modules")
cp "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$tmp/initrd.img"

# A sparse 6 GiB ext4 holding the tree (about 1.5 GiB used).
truncate -s 6G "$tmp/root.img"
mkfs.ext4 -q -F -L root -d "$rootfs" "$tmp/root.img"
rm -rf "$rootfs"

mkdir -p "$out"
mv "$tmp/root.img" "$tmp/vmlinuz" "$tmp/initrd.img" "$out/"
echo "$kver" > "$out/kernel-version"
