#!/usr/bin/env python3
"""parliament's checks on one policy file, for tests/host/policy.rs.

Does what `parliament --minimum_severity INFO [--config FILE] < POLICY`
does, through parliament's library rather than its command line: the
command line of parliament 1.6.4 writes its arguments to the fixed path
/tmp/parliament.log, which another user's earlier run may own (and then
it fails). Prints one line per finding, as the command line does, and
exits 1 if there is any, 0 if there is none.
"""

import argparse
import sys

import parliament
from parliament.cli import is_finding_filtered


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="settings over parliament's own (its --config)")
    ap.add_argument("policy", help="the policy file (JSON)")
    args = ap.parse_args()
    parliament.override_config(args.config)
    with open(args.policy) as f:
        policy = parliament.analyze_policy_string(
            f.read(), args.policy, config=parliament.config
        )
    shown = []
    for finding in policy.findings:
        finding = parliament.enhance_finding(finding)
        if not is_finding_filtered(finding, "INFO"):
            shown.append(finding)
    for f in shown:
        print(f"{f.severity} - {f.title} - {f.description} - {f.detail} - {f.location}")
    return 1 if shown else 0


if __name__ == "__main__":
    sys.exit(main())
