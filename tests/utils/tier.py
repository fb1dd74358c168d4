"""Run one test tier as named, timed stages and print a table of them at the end.

    python3 tests/utils/tier.py unit|test|lab

Each stage is a make target.  The lab's stages form a chain that runs in the background, beside
the Python stages, from the start: its apt, download, kernel build and guest tests overlap the
checks that need no guest.  Every stage runs even after another one failed (a chain stops at its
own first failure), so one CI run shows them all; the exit status is non-zero when any failed.
When the lab chain runs beside them, the Python stages run under `nice`: the chain (kernel build,
then guests under TCG) is the tier's critical path, and the Python stages have minutes of slack.
Standard library only: it runs before the venv exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "build" / "logs" / "lab.log"
# A stage that cannot run on this machine writes its reason to SKIPS/<target> (tests/utils/leg.sh, ran.py): the
# table then says "skipped: reason", never "passed".
SKIPS = ROOT / "build" / "logs" / "skips"
LAB_BUILD = ("lab: host packages, kernel, root fs, disk, snapshot", "lab-build")

# tier: (stages in the foreground, the lab chain in the background)
TIERS = {
    "unit": ([("static checks (flake8: pyflakes, pycodestyle)", "static"),
              ("unit and package tests", "units")], []),
    "test": ([("static checks (flake8)", "static"),
              ("sanity, 2.19/py3.11 + target Pythons", "sanity"),
              ("newest leg: sanity + units, 2.21/py3.13", "newest"),
              ("oldest leg: sanity + units, 2.16/py3.10", "oldest"),
              ("ansible-lint (production)", "lint"),
              ("docs, galaxy-importer, EE context", "docs"),
              ("unit and package tests", "units"),
              ("simulated-tree integration", "simulated")],
             [LAB_BUILD, ("lab, lean tier (real guests; in the background)", "lab-lean")]),
    "lab": ([], [LAB_BUILD, ("lab, whole matrix (real guests)", "lab-full")]),
}


def fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def run(make: list, target: str, out=None) -> tuple[float, str]:
    started = time.monotonic()
    skipped = SKIPS / target
    skipped.unlink(missing_ok=True)
    rc = subprocess.run([*make, target], stdout=out, stderr=subprocess.STDOUT if out else None,
                        check=False, env={**os.environ, "KHO_SKIP_DIR": str(SKIPS)}).returncode
    if rc == 0 and skipped.exists():
        return time.monotonic() - started, f"skipped: {skipped.read_text().strip()}"
    return time.monotonic() - started, "passed" if rc == 0 else f"FAILED (rc {rc})"


def chain(make: list, stages: list, rows: list, venv_ready: threading.Event) -> None:
    """The lab's stages in order, into LOG; a failed one stops the rest of the chain.  Its guest tests
    wait for the foreground to have made the venv (two makes must never build one venv at once)."""
    with open(LOG, "wb") as out:
        for i, (name, target) in enumerate(stages):
            if target != "lab-build":
                venv_ready.wait()
            seconds, result = run(make, target, out)
            rows.append((name, seconds, result))
            if result != "passed" and not result.startswith("skipped"):
                rows += [(later, 0.0, f"not run: {target} failed") for later, _t in stages[i + 1:]]
                return


def main() -> int:
    tier = sys.argv[1] if len(sys.argv) > 1 else ""
    if tier not in TIERS:
        print(f"usage: tier.py {'|'.join(TIERS)}", file=sys.stderr)
        return 2
    foreground, background = TIERS[tier]
    LOG.parent.mkdir(parents=True, exist_ok=True)
    make = [os.environ.get("MAKE", "make"), "--no-print-directory", "-C", str(ROOT)]
    started = time.monotonic()
    rows: list = []
    lab_rows: list = []
    venv_ready = threading.Event()
    lab = threading.Thread(target=chain, args=(make, background, lab_rows, venv_ready))
    if background and foreground:
        print(f"== {', '.join(name for name, _t in background)}: in the background, log {LOG}", flush=True)
        lab.start()
    # Nothing to overlap with (make test-lab): the lab's stages in the foreground, output as it comes.
    later = [] if foreground else background
    fg_make = ["nice", "-n", "10", *make] if background and foreground else make
    for name, target in [("the test venv (.venv, tests/requirements.txt)", "venv"), *foreground, *later]:
        print(f"== {name} (make {target})", flush=True)
        rows.append((name, *run(fg_make, target)))
        venv_ready.set()
        if target in dict(later).values() and rows[-1][2] != "passed" and not rows[-1][2].startswith("skipped"):
            break
    if lab.ident:
        print("== waiting for the lab's background stages", flush=True)
        lab.join()
        text = LOG.read_text(errors="replace").splitlines()
        failed = any(r[2].startswith(("FAILED", "not run")) for r in lab_rows)
        print("\n".join(text[-300:] if failed else text[-15:]), flush=True)
        rows += lab_rows
    total = time.monotonic() - started
    width = max(len(r[0]) for r in rows)
    beside = "; the lab's stages ran beside the others" if background and foreground else ""
    print(f"\n== make {'test-lab' if tier == 'lab' else tier}: stages (m:ss, wall clock{beside})")
    for name, seconds, result in rows:
        print(f"  {name:<{width}}  {fmt(seconds):>8}  {result}")
    print(f"  {'total':<{width}}  {fmt(total):>8}")
    return 0 if all(r[2] == "passed" or r[2].startswith("skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
