# The cases of the main benchmark boot (after bench/lib.sh): warm-up,
# start-up, time to mounted (recipe, floor, secretfs), scaling, peak memory,
# throughput. Environment: ROUNDS, SCALE_ROUNDS, SCALE_SIZES (GiB), and
# D_<role> for raw, recipe, floor_<r>, sfs_<r>, scale_<GiB>_<r>, mem_sfs,
# mem_luks.

# --- the guest ---------------------------------------------------------------

info guest_kernel "$(uname -r)"
info guest_nproc "$(nproc)"
info guest_cpu "$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n1)"
info guest_mem_kib "$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\).*/\1/p' /proc/meminfo)"
info cryptsetup_version "$(cryptsetup --version)"
info e2fsprogs_version "$(mke2fs -V 2>&1 | head -n1)"
command -v fio >/dev/null || fail "fio is not installed (scripts/setup installs it)"
[[ -x /usr/bin/time ]] || fail "GNU time (/usr/bin/time) is not installed (scripts/setup installs it)"

# --- 0. warm-up --------------------------------------------------------------
# Loads the kernel modules (dm-crypt, the ciphers, ext4) and pulls every
# program and library through the guest's 9p cache once, so that the first
# measured pipeline does not pay for it. Uses the raw disk, which the
# throughput runs overwrite later.
echo "bench: warm-up"
dev raw
mkdir -p /mnt/warm
"$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$DEV" --name warm \
  --mount /mnt/warm >>"$B/log/warmup.log" 2>&1 || fail "warm-up: secretfs up"
"$SECRETFS" down --name warm >>"$B/log/warmup.log" 2>&1 || fail "warm-up: secretfs down"
floor_up "$DEV" warm /mnt/warm >>"$B/log/warmup.log" 2>&1 || fail "warm-up: floor"
floor_down warm /mnt/warm >>"$B/log/warmup.log" 2>&1 || fail "warm-up: floor down"
for p in "cryptsetup --version" "mke2fs -V" "mkfs.ext4 -V" "mount -V" "umount -V" \
  "dd --version" "blkid -V" "fio --version" "/usr/bin/time --version" "$SECRETFS --version"; do
  $p >/dev/null 2>&1 || fail "warm-up: $p"
done
T=()

# --- 1. process start-up in the guest ----------------------------------------
for r in 1 2 3 4 5; do
  measure start_true "$r" run one /bin/true
  measure start_cryptsetup "$r" run one cryptsetup --version
  measure start_mkfs "$r" run one mkfs.ext4 -V
  measure start_secretfs "$r" run one "$SECRETFS" --version
done

# --- 2. time to mounted, 2 GiB: recipe, floor, secretfs ----------------------
dev recipe
mkdir -p /mnt/recipe
measure recipe 1 "luksFormat luksOpen dd mke2fs mount" recipe_up "$DEV" recipe /mnt/recipe
cryptsetup luksDump "$DEV" >"$VM_OUT/recipe-luksdump.txt" 2>&1
cryptsetup status recipe >"$VM_OUT/recipe-status.txt" 2>&1
info recipe_pbkdf "$(sed -n 's/^[[:space:]]*PBKDF:[[:space:]]*//p' "$VM_OUT/recipe-luksdump.txt" | head -n1)"
info recipe_pbkdf_memory_kib "$(sed -n 's/^[[:space:]]*Memory:[[:space:]]*//p' "$VM_OUT/recipe-luksdump.txt" | head -n1)"
info recipe_pbkdf_time_cost "$(sed -n 's/^[[:space:]]*Time cost:[[:space:]]*//p' "$VM_OUT/recipe-luksdump.txt" | head -n1)"
info recipe_pbkdf_threads "$(sed -n 's/^[[:space:]]*Threads:[[:space:]]*//p' "$VM_OUT/recipe-luksdump.txt" | head -n1)"
info recipe_sector_size "$(sed -n 's/^[[:space:]]*sector size:[[:space:]]*//p' "$VM_OUT/recipe-status.txt" | head -n1)"
info recipe_fs "$(blkid -o value -s TYPE /dev/mapper/recipe)"
umount /mnt/recipe || fail "umount /mnt/recipe"

# Rounds alternate which of the two goes first.
for ((r = 1; r <= ROUNDS; r++)); do
  if ((r % 2)); then order="floor sfs"; else order="sfs floor"; fi
  for who in $order; do
    dev "${who}_$r"
    mkdir -p "/mnt/$who$r"
    if [[ $who == floor ]]; then
      measure floor "$r" "luksFormat open mkfs mount" floor_up "$DEV" "floor$r" "/mnt/floor$r"
      measure floor_down "$r" "umount close" floor_down "floor$r" "/mnt/floor$r"
      measure floor_reopen "$r" "open mount" floor_reopen "$DEV" "floor$r" "/mnt/floor$r"
      floor_down "floor$r" "/mnt/floor$r" >>"$B/log/floor_down.log" 2>&1 || fail "floor down $r"
    else
      measure secretfs "$r" up sfs_up "$DEV" "sfs$r" "/mnt/sfs$r" "sfs-$r-format"
      measure secretfs_down "$r" down sfs_down "sfs$r"
      measure secretfs_reopen "$r" up sfs_up "$DEV" "sfs$r" "/mnt/sfs$r" "sfs-$r-reopen"
      sfs_down "sfs$r" >>"$B/log/secretfs_down.log" 2>&1 || fail "secretfs down $r"
    fi
  done
done

# --- 3. scaling: 1, 8 and 64 GiB ---------------------------------------------
for ((r = 1; r <= SCALE_ROUNDS; r++)); do
  for size in $SCALE_SIZES; do
    dev "scale_${size}_$r"
    name=scale${size}g$r
    mkdir -p "/mnt/$name"
    measure "scale_${size}g_format" "$r" up sfs_up "$DEV" "$name" "/mnt/$name" "$name-format"
    measure "scale_${size}g_down" "$r" down sfs_down "$name"
    measure "scale_${size}g_reopen" "$r" up sfs_up "$DEV" "$name" "/mnt/$name" "$name-reopen"
    sfs_down "$name" >>"$B/log/scale_down.log" 2>&1 || fail "secretfs down $name"
  done
done

# --- 4. peak memory ----------------------------------------------------------
dev mem_sfs
mkdir -p /mnt/mem
rss secretfs_up_format "$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$DEV" --name mem --mount /mnt/mem
rss secretfs_down "$SECRETFS" down --name mem
rss secretfs_up_reopen "$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$DEV" --name mem --mount /mnt/mem
"$SECRETFS" down --name mem >>"$B/log/rss.log" 2>&1 || fail "secretfs down mem"
dev mem_luks
rss luksFormat_argon2id cryptsetup luksFormat --batch-mode --key-file "$PASS" "$DEV"
rss luksOpen_argon2id cryptsetup luksOpen --key-file "$PASS" "$DEV" memluks
cryptsetup close memluks || fail "cryptsetup close memluks"
rss luksFormat_pbkdf2 cryptsetup luksFormat --batch-mode --key-file "$PASS" --type luks2 \
  --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 512 \
  --sector-size 4096 --label secretfs --subsystem secretfs "$DEV"
rss luksOpen_pbkdf2 cryptsetup open --key-file "$PASS" "$DEV" memluks
cryptsetup close memluks || fail "cryptsetup close memluks"
# What the recipe's defaults cost on real hardware, where the argon2id
# benchmark reaches the 1 GiB cap (the emulated CPU gets far less).
rss luksFormat_argon2id_1g cryptsetup luksFormat --batch-mode --key-file "$PASS" \
  --pbkdf argon2id --pbkdf-memory 1048576 --pbkdf-force-iterations 4 "$DEV"
rss luksOpen_argon2id_1g cryptsetup luksOpen --key-file "$PASS" "$DEV" memluks
cryptsetup close memluks || fail "cryptsetup close memluks"

# --- 5. throughput with O_DIRECT: raw disk, secretfs mapping, recipe mapping --
# plus, to tell the two differences between them apart, a diagnostic
# mapping with secretfs's 4096-byte sectors but the kernel's default
# workqueues (on the mem_luks disk, which is done with).
dev raw
RAW=$DEV
dev sfs_1
"$SECRETFS" up --passphrase-file "$PASS" --pbkdf pbkdf2 --disk "$DEV" --name tput \
  --mount /mnt/tput >>"$B/log/tput.log" 2>&1 || fail "secretfs up tput"
umount /mnt/tput || fail "umount /mnt/tput"
cryptsetup status tput >"$VM_OUT/secretfs-status.txt" 2>&1
info secretfs_sector_size "$(sed -n 's/^[[:space:]]*sector size:[[:space:]]*//p' "$VM_OUT/secretfs-status.txt" | head -n1)"
info secretfs_flags "$(sed -n 's/^[[:space:]]*flags:[[:space:]]*//p' "$VM_OUT/secretfs-status.txt" | head -n1)"
info recipe_flags "$(sed -n 's/^[[:space:]]*flags:[[:space:]]*//p' "$VM_OUT/recipe-status.txt" | head -n1)"
dev mem_luks
cryptsetup luksFormat --batch-mode --key-file "$PASS" --type luks2 --pbkdf pbkdf2 \
  --pbkdf-force-iterations 1000 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 \
  "$DEV" >>"$B/log/tput.log" 2>&1 || fail "luksFormat wq4k"
cryptsetup open --key-file "$PASS" "$DEV" wq4k >>"$B/log/tput.log" 2>&1 || fail "open wq4k"
TARGETS=("raw:$RAW" "secretfs:/dev/mapper/tput" "wq4k:/dev/mapper/wq4k" "recipe:/dev/mapper/recipe")
# Three rounds, each going through every target in turn.
for r in 1 2 3; do
  for target in "${TARGETS[@]}"; do
    seq_dd "${target%%:*}" "${target#*:}" "$r"
  done
done
for target in "${TARGETS[@]}"; do
  rand_fio "${target%%:*}" "${target#*:}"
done
cryptsetup close wq4k || fail "cryptsetup close wq4k"
cryptsetup close tput || fail "cryptsetup close tput"
cryptsetup close recipe || fail "cryptsetup close recipe"

bench_finish
