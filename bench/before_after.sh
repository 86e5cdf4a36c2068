# The before/after boot (after bench/lib.sh): `up` of this build against an
# older secretfs release binary ($BASELINE), side by side in one boot, on
# fresh blank disks of 2 GiB and 64 GiB (sparse): first format, down, and
# re-open. Each round runs both binaries, in alternating order. The new
# build's extra work on the normal path is reading the device where data
# would be (the zero check) and writing its token.
#
# Environment: BASELINE, ROUNDS, and D_<role> for ba_<which>_<GiB>_<r>
# (which: new, old).

info guest_kernel "$(uname -r)"
info baseline_version "$("$BASELINE" --version)"
info secretfs_version "$("$SECRETFS" --version)"

# Warm-up: both binaries and their libraries through the 9p cache once.
for bin in "$SECRETFS" "$BASELINE"; do
  "$bin" --version >/dev/null 2>&1 || fail "warm-up: $bin --version"
  "$bin" status --name none >/dev/null 2>&1 || fail "warm-up: $bin status"
done

for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="new old"; else order="old new"; fi
  for size in 2 64; do
    for which in $order; do
      if [[ $which == new ]]; then bin=$SECRETFS; else bin=$BASELINE; fi
      dev "ba_${which}_${size}_$r"
      name=ba${which}${size}g$r
      mkdir -p "/mnt/$name"
      measure "${which}_${size}g_format" "$r" up sfs_with "$bin" "$DEV" "$name" "/mnt/$name" "$name-format"
      "$bin" down --name "$name" >>"$B/log/ba_down.log" 2>&1 || fail "$which down $name"
      measure "${which}_${size}g_reopen" "$r" up sfs_with "$bin" "$DEV" "$name" "/mnt/$name" "$name-reopen"
      "$bin" down --name "$name" >>"$B/log/ba_down.log" 2>&1 || fail "$which down $name"
    done
  done
done

bench_finish
