#!/usr/bin/env bash
# mmdebstrap customize hook for build-image.sh: the settings a cloud image
# needs, then the test's hook units. $1 = the root filesystem, $2 = this
# directory.
set -euo pipefail
root=$1 here=$2

echo '/dev/vda / ext4 defaults,errors=remount-ro 0 1' > "$root/etc/fstab"
# Each boot of a fresh overlay is a new machine (as an AMI is).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# Without it cloud-init 22.4's locale module fails on Debian.
echo 'LANG=C.UTF-8' > "$root/etc/default/locale"
echo debian > "$root/etc/hostname"
chroot "$root" systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

install -m 0755 "$here/hook" "$root/usr/local/sbin/secretfs-test-hook"
install -m 0755 "$here/aws" "$root/usr/local/bin/aws"
install -m 0644 "$here/secretfs-test-early.service" "$here/secretfs-test-observe.service" \
  "$root/etc/systemd/system/"
chroot "$root" systemctl enable secretfs-test-early.service secretfs-test-observe.service >/dev/null 2>&1
