#!/usr/bin/env python3
"""Runs a moto_server script in this very process, with a bounded lifetime.

  python moto_guard.py [--max-seconds N] [--watch-stdin] MOTO_SERVER [ARGS...]

MOTO_SERVER is the console script pip installed (a Python file); it runs here
as __main__ with ARGS, so the process id the caller holds is moto's own and
killing it leaves nothing behind. The process exits by itself after
--max-seconds (default 900) and, with --watch-stdin, as soon as its stdin
closes (the test process that started it is gone).

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

    sys.argv = [os.path.basename(script)] + argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
