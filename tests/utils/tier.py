"""Run one test tier as named, timed stages and print a table of them at the end.

    python3 tests/utils/tier.py unit|test|lab

Each stage is a make target.  A stage marked "background" starts at once beside the others
(the lab's apt, download and kernel build overlap the Python checks); the first stage that
needs it waits for it.  Every stage runs even after one failed, so one CI run shows them all;
the exit status is non-zero when any failed.  Standard library only: it runs before the venv.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "build" / "logs"

# (stage, make target, needs a background stage or None, runs in the background)
TIERS = {
    "unit": [
        ("static checks (flake8: pyflakes, pycodestyle)", "static", None, False),
        ("unit and package tests", "units", None, False),
    ],
    "test": [
        ("lab: host packages, kernel, root fs, disk, snapshot", "lab-build", None, True),
        ("static checks (flake8)", "static", None, False),
        ("sanity, 2.19/py3.11 + target Pythons", "sanity", None, False),
        ("newest leg: sanity + units, 2.21/py3.13", "newest", None, False),
        ("ansible-lint (production)", "lint", None, False),
        ("docs, galaxy-importer, EE context", "docs", None, False),
        ("unit and package tests", "units", None, False),
        ("simulated-tree integration", "simulated", None, False),
        ("lab, lean tier (real guest)", "lab-lean", "lab-build", False),
    ],
    "lab": [
        ("lab: host packages, kernel, root fs, disk, snapshot", "lab-build", None, False),
        ("lab, whole matrix (real guests)", "lab-full", None, False),
    ],
}


def fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def main() -> int:
    tier = sys.argv[1] if len(sys.argv) > 1 else ""
    if tier not in TIERS:
        print(f"usage: tier.py {'|'.join(TIERS)}", file=sys.stderr)
        return 2
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    make = [os.environ.get("MAKE", "make"), "--no-print-directory", "-C", str(ROOT)]
    started = time.monotonic()
    rows: list[tuple[str, float, str]] = []
    background: dict[str, tuple[str, subprocess.Popen, float, Path]] = {}
    for name, target, needs, in_background in TIERS[tier]:
        if in_background:
            log = LOG_DIR / f"{target}.log"
            print(f"== {name}: started in the background, log {log}", flush=True)
            with open(log, "wb") as out:
                background[target] = (name, subprocess.Popen([*make, target], stdout=out, stderr=subprocess.STDOUT),
                                      time.monotonic(), log)
            continue
        if needs in background:
            rows.append(_finish(background.pop(needs)))
            if rows[-1][2] != "passed":
                rows.append((name, 0.0, f"not run: {needs} failed"))
                continue
        print(f"== {name} (make {target})", flush=True)
        t = time.monotonic()
        rc = subprocess.run([*make, target], check=False).returncode
        rows.append((name, time.monotonic() - t, "passed" if rc == 0 else f"FAILED (rc {rc})"))
    rows += [_finish(job) for job in background.values()]
    total = time.monotonic() - started
    width = max(len(r[0]) for r in rows)
    print(f"\n== make {'test-lab' if tier == 'lab' else tier}: stages (m:ss, wall clock; background stages overlap)")
    for name, seconds, result in rows:
        print(f"  {name:<{width}}  {fmt(seconds):>8}  {result}")
    print(f"  {'total':<{width}}  {fmt(total):>8}")
    return 0 if all(r[2] == "passed" for r in rows) else 1


def _finish(job: tuple[str, subprocess.Popen, float, Path]) -> tuple[str, float, str]:
    name, proc, t, log = job
    print(f"== {name}: waiting for the background stage", flush=True)
    rc = proc.wait()
    seconds = time.monotonic() - t
    text = log.read_text(errors="replace").splitlines()
    print("\n".join(text[-40:] if rc else text[-5:]), flush=True)
    return name, seconds, "passed" if rc == 0 else f"FAILED (rc {rc}), log {log}"


if __name__ == "__main__":
    sys.exit(main())
