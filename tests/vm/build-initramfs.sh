#!/usr/bin/env bash
# Builds the initramfs of the real-kernel test guest.
#
#   tests/vm/build-initramfs.sh KERNEL_ROOT KVER OUT.cpio.gz [ARCH]
#
# KERNEL_ROOT is an unpacked Debian linux-image package (lib/modules/KVER
# with modules.dep, as scripts/setup leaves it). ARCH is x86_64 (the
# default: the host's static busybox) or aarch64 (KERNEL_ROOT is then the
# arm64 root scripts/setup extracts, whose /bin/busybox is taken). The image holds a static
# busybox, the kernel modules the guest needs (decompressed, in load order,
# listed in /etc/modules.load) and tests/vm/init as /init. The guest runs
# nothing else from the image: /init mounts the host's root over virtio-9p
# and chroots into it (see tests/vm/init).
#
# Idempotent: OUT is replaced atomically, and only when the build succeeds.
set -euo pipefail
export PATH=$PATH:/usr/sbin:/sbin

if (($# != 3 && $# != 4)); then
  echo "usage: $0 KERNEL_ROOT KVER OUT.cpio.gz [ARCH]" >&2
  exit 2
fi
kroot=$(realpath "$1")
kver=$2
out=$3
arch=${4:-x86_64}
here=$(cd "$(dirname "$0")" && pwd)
moddir=$kroot/lib/modules/$kver

[[ -f $moddir/modules.dep ]] || { echo "build-initramfs: no modules.dep in $moddir (run scripts/setup)" >&2; exit 1; }
# The host's busybox lists the applets (the same Debian release's as the
# guest's, whichever architecture that is).
host_busybox=$(command -v busybox || true)
[[ -n $host_busybox ]] || host_busybox=/bin/busybox
case $arch in
  x86_64) busybox=$host_busybox ;;
  aarch64) busybox=$kroot/bin/busybox ;;
  *) echo "build-initramfs: unknown ARCH $arch (x86_64 or aarch64)" >&2; exit 2 ;;
esac
file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || \
  ldd "$busybox" 2>&1 | grep -q 'not a dynamic executable' || \
  { echo "build-initramfs: $busybox is not a static busybox (install busybox-static)" >&2; exit 1; }
for tool in modprobe cpio gzip; do
  command -v "$tool" >/dev/null || { echo "build-initramfs: $tool not found (run scripts/setup)" >&2; exit 1; }
done

# Modules to load, in this order; dependencies are resolved with modprobe and
# loaded first. "?" marks modules allowed to fail at load time (CPU-specific
# accelerations: they refuse to load when the emulated CPU lacks the feature).
# The CPU-specific ones: before nvme (its CRC) and before ext4 (AES, CRC32C);
# on arm64 AES comes from the ARMv8 crypto extensions (QEMU's cortex-a57
# has them) instead of AES-NI.
case $arch in
  x86_64) accel_crc=("?crct10dif-pclmul") accel_aes=("?aesni-intel" "?crc32c-intel") ;;
  aarch64) accel_crc=() accel_aes=("?aes-ce-blk" "?aes-neon-blk") ;;
esac
MODULES=(
  # devices: virtio PCI, disks, network, entropy, NVMe (instance store stand-in)
  virtio_pci virtio_blk virtio_net virtio-rng
  "${accel_crc[@]}" nvme
  # host root and the output share; overlay adds /lib/modules to the host root
  9pnet_virtio 9p overlay
  # what secretfs and cryptsetup use
  loop dm-mod dm-crypt ecb xts
  af_alg algif_skcipher algif_hash
  "${accel_aes[@]}"
  ext4
)
# Everything else (xfs, ...) is loaded on demand from the chroot, where
# /lib/modules is the kernel package's (see init), by modprobe or by the
# kernel's own autoloading through /sbin/modprobe below.

work=$(mktemp -d)
tmp_out=
trap 'rm -rf "$work"; [[ -z $tmp_out ]] || rm -f "$tmp_out"' EXIT
img=$work/root
mkdir -p "$img"/{bin,dev,etc,lib/modules,proc,sys,newroot,run,tmp}

# busybox and its applets
cp "$busybox" "$img/bin/busybox"
for applet in $("$host_busybox" --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$img/bin/$applet"
done

# modules: resolve dependency order, decompress, record the load order
declare -A seen=()
: > "$img/etc/modules.load"
for entry in "${MODULES[@]}"; do
  optional=
  name=$entry
  if [[ $name == \?* ]]; then optional=1; name=${name#\?}; fi
  deps=$(modprobe -d "$kroot" -S "$kver" --show-depends "$name") || {
    echo "build-initramfs: module $name unknown to kernel $kver" >&2; exit 1; }
  while read -r verb path _; do
    [[ $verb == insmod ]] || continue           # "builtin NAME": nothing to load
    base=$(basename "$path")
    base=${base%.xz}; base=${base%.zst}; base=${base%.gz}
    [[ -z ${seen[$base]:-} ]] || continue
    seen[$base]=1
    case $path in
      *.ko.xz)  xz -dc "$path" > "$img/lib/modules/$base" ;;
      *.ko.zst) zstd -qdc "$path" > "$img/lib/modules/$base" ;;
      *.ko.gz)  gzip -dc "$path" > "$img/lib/modules/$base" ;;
      *.ko)     cp "$path" "$img/lib/modules/$base" ;;
      *) echo "build-initramfs: unexpected module file $path" >&2; exit 1 ;;
    esac
    # an optional module's dependencies are optional too, unless a required
    # module already pulled them in
    echo "$base${optional:+ optional}" >> "$img/etc/modules.load"
  done <<< "$deps"
done

install -m 0755 "$here/init" "$img/init"
mkdir -p "$img/sbin"
cat > "$img/sbin/modprobe" <<'MODPROBE'
#!/bin/busybox sh
# The kernel's module autoloader (request_module) runs this in the initramfs
# root; hand the request to the real modprobe inside the chroot.
exec /bin/chroot /newroot /sbin/modprobe "$@"
MODPROBE
chmod 0755 "$img/sbin/modprobe"

mkdir -p "$(dirname "$out")"
tmp_out=$(mktemp "$(dirname "$out")/.initramfs.XXXXXX")
(cd "$img" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -6 > "$tmp_out"
chmod 0644 "$tmp_out"
mv -f "$tmp_out" "$out"
tmp_out=
echo "build-initramfs: wrote $out ($(wc -l < "$img/etc/modules.load") modules)" >&2
