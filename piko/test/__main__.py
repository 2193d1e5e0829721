"""
Run the whole test suite with trial and end with a plain summary line.

``python -m piko.test [trial arguments]`` runs ``python -b -m twisted.trial
piko`` (or the given test names), streams its output, then prints
``N passed, M failed`` so any CI reads the outcome, and exits with trial's
status.  AUTOBAHN_USE_NVX=1 makes a missing autobahn fast path fail loudly.
The tests that need a running reactor run on the one ``piko`` itself runs
on (``--reactor=piko-epoll``, see :mod:`piko._reactor`) on Linux, unless a
``--reactor`` argument says otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys


def main(argv: list[str]) -> int:
    """Run trial and summarise; return its exit status."""
    names = argv or ["piko"]
    env = dict(os.environ, AUTOBAHN_USE_NVX=os.environ.get("AUTOBAHN_USE_NVX", "1"))
    reactor = []
    if sys.platform.startswith("linux") and not any(a.startswith("--reactor") for a in names):
        reactor = ["--reactor=piko-epoll"]
    command = [sys.executable, "-b", "-m", "twisted.trial", *reactor, *names]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True
    )
    assert process.stdout is not None
    last = ""
    for line in process.stdout:
        sys.stdout.write(line)
        if line.strip():
            last = line.strip()
    status = process.wait()
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", last)}
    passed = counts.get("successes", 0)
    failed = sum(counts.get(key, 0) for key in ("failures", "errors", "unexpectedSuccesses"))
    skipped = counts.get("skips", 0)
    sys.stdout.write(f"\n{passed} passed, {failed} failed, {skipped} skipped\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
