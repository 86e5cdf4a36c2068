#!/usr/bin/env bash
# Extracts the uncompressed kernel (an ELF vmlinux) from a bzImage.
#
#   tests/vm/extract-vmlinux.sh VMLINUZ OUT
#
# QEMU boots an ELF vmlinux directly through its PVH entry point, which skips
# the firmware's real-mode setup and the kernel's self-decompression: under
# software emulation that saves seconds per boot. Fails (and leaves OUT
# alone) when no payload decompresses to an ELF image with a PVH entry note.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 VMLINUZ OUT" >&2
  exit 2
fi
in=$1
out=$2
[[ -f $in ]] || { echo "extract-vmlinux: $in not found" >&2; exit 1; }

tmp=$(mktemp "$(dirname "$out")/.vmlinux.XXXXXX")
trap 'rm -f "$tmp"' EXIT

is_pvh_elf() {
  [[ $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]] || return 1
  # XEN_ELFNOTE_PHYS32_ENTRY (note type 18) marks the PVH entry point.
  ! command -v readelf >/dev/null || readelf -n "$1" 2>/dev/null | grep -q 'note type: (0x00000012)'
}

try() { # MAGIC DECOMPRESSOR...
  local magic=$1 pos
  shift
  command -v "$1" >/dev/null || return 1
  for pos in $(LC_ALL=C grep -abo "$magic" "$in" 2>/dev/null | cut -d: -f1 | head -5); do
    if tail -c +$((pos + 1)) "$in" | "$@" > "$tmp" 2>/dev/null || [[ -s $tmp ]]; then
      if is_pvh_elf "$tmp"; then
        mv -f "$tmp" "$out"
        return 0
      fi
    fi
  done
  return 1
}

try $'\xfd7zXZ\x00' xz -dc ||
  try $'\x28\xb5\x2f\xfd' zstd -qdc ||
  try $'\x1f\x8b\x08' gzip -dc ||
  try $'\x02\x21\x4c\x18' lz4 -dc ||
  try 'BZh' bzip2 -dc || {
  echo "extract-vmlinux: no PVH-bootable ELF kernel found in $in" >&2
  exit 1
}
