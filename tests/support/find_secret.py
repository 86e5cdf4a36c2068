#!/usr/bin/env python3
"""Searches files for a secret without being told the secret.

The needles file holds one line per form of the secret (raw bytes, hex,
base64, ...): `LENGTH SHA256HEX`. Every window of LENGTH bytes of every file
is hashed and compared, so no test file ever contains the secret itself.

  find_secret.py NEEDLES PATH...     (directories are walked, mounts below
                                      them included, symlinks not followed)

Prints one JSON object: {"files": N, "bytes": N, "hits": [{"path", "form"}],
"errors": [...]}. Exit 0 whether or not anything was found; the caller
asserts on "hits".
"""
import hashlib
import json
import os
import sys

MAX_FILE = 64 << 20


def load_needles(path):
    needles = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                needles.append((int(parts[0]), parts[1], parts[2] if len(parts) > 2 else parts[1][:8]))
    return needles


def scan_bytes(data, needles):
    found = []
    for length, digest, form in needles:
        if len(data) < length:
            continue
        target = bytes.fromhex(digest)
        sha = hashlib.sha256
        for i in range(len(data) - length + 1):
            if sha(data[i:i + length]).digest() == target:
                found.append(form)
                break
    return found


def walk(path):
    if os.path.isfile(path) or path.startswith("/proc/"):
        yield path
        return
    # Mounts below the given paths are searched too (the volume under /mnt,
    # the overlay upper layers under /run): callers name only places the
    # system under test can write. Symlinks are not followed.
    for root, dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.islink(p) or not (st.st_mode & 0o170000 == 0o100000):
                continue
            yield p


def main():
    needles = load_needles(sys.argv[1])
    out = {"files": 0, "bytes": 0, "hits": [], "errors": []}
    for top in sys.argv[2:]:
        for p in walk(top):
            try:
                with open(p, "rb") as f:
                    data = f.read(MAX_FILE)
            except OSError as e:
                out["errors"].append(f"{p}: {e.strerror}")
                continue
            out["files"] += 1
            out["bytes"] += len(data)
            for form in scan_bytes(data, needles):
                out["hits"].append({"path": p, "form": form})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
