#!/usr/bin/env python3
"""Runs a moto_server script in this very process, with a bounded lifetime.

  python moto_guard.py [--max-seconds N] [--watch-stdin] MOTO_SERVER [ARGS...]

MOTO_SERVER is the console script pip installed (a Python file); it runs here
as __main__ with ARGS, so the process id the caller holds is moto's own and
killing it leaves nothing behind. The process exits by itself after
--max-seconds (default 900) and, with --watch-stdin, as soon as its stdin
closes (the test process that started it is gone).

KMS keys that are disabled or pending deletion are refused as real KMS
refuses them (moto itself goes on using them): see
kms_refuses_keys_not_enabled.

Must be run by the interpreter that has moto installed (the one named on the
moto_server script's #! line).
"""

import os
import runpy
import sys
import threading


def main():
    argv = sys.argv[1:]
    max_seconds = 900.0
    watch_stdin = False
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--max-seconds":
            max_seconds = float(argv.pop(0))
        elif opt == "--watch-stdin":
            watch_stdin = True
        elif opt == "--":
            break
        else:
            sys.exit(f"moto_guard: unknown option {opt}")
    if not argv:
        sys.exit("moto_guard: no moto_server script given")
    script = argv[0]

    def stop(reason):
        sys.stderr.write(f"moto_guard: stopping moto ({reason})\n")
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(max_seconds, stop, args=("max-seconds",))
    timer.daemon = True
    timer.start()
    if watch_stdin:
        def watch():
            try:
                while os.read(0, 4096):
                    pass
            except OSError:
                pass
            stop("stdin closed")

        threading.Thread(target=watch, daemon=True).start()

    kms_refuses_keys_not_enabled()
    sys.argv = [os.path.basename(script)] + argv[1:]
    runpy.run_path(script, run_name="__main__")


def kms_refuses_keys_not_enabled():
    """Real KMS refuses every cryptographic operation with a key that is
    disabled (DisabledException) or pending deletion
    (KMSInvalidStateException); moto 5 goes on using it. Wraps the
    backend's Encrypt and Decrypt, which its GenerateDataKey and ReEncrypt
    call too, so a test that disables a key sees what AWS would answer."""
    from moto.core.exceptions import JsonRESTError
    from moto.kms.models import KmsBackend

    def check(backend, key_id):
        key = backend.keys.get(key_id)
        if key is None or key.key_state == "Enabled":
            return
        if key.key_state == "Disabled":
            raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
        raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")

    encrypt, decrypt = KmsBackend.encrypt, KmsBackend.decrypt

    def checked_encrypt(self, key_id, plaintext, encryption_context):
        check(self, self.any_id_to_key_id(key_id))
        return encrypt(self, key_id, plaintext, encryption_context)

    def checked_decrypt(self, ciphertext_blob, encryption_context, key_id=None):
        plaintext, arn = decrypt(self, ciphertext_blob, encryption_context, key_id)
        check(self, arn.rsplit("/", 1)[-1])
        return plaintext, arn

    KmsBackend.encrypt, KmsBackend.decrypt = checked_encrypt, checked_decrypt


if __name__ == "__main__":
    main()
