"""After a lab tier's pytest: did it test anything?  Standard library only.

    python3 tests/utils/ran.py JUNIT_XML STAGE

Where the lab cannot run on this machine, the stage is recorded as skipped, with the reason, for tier.py's table
(a file under $KHO_SKIP_DIR named after the stage) and exits 0.  Where it can, a run that passed no test fails:
a green table must mean that real guests were handed over.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def counts(junit: Path) -> dict:
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    total["passed"] = total["tests"] - total["failures"] - total["errors"] - total["skipped"]
    return total


def main() -> int:
    junit, stage = Path(sys.argv[1]), sys.argv[2]
    why = subprocess.run([sys.executable, str(ROOT / "tests" / "lab" / "lab.py"), "unavailable"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if why:
        skip_dir = Path(os.environ.get("KHO_SKIP_DIR", ROOT / "build" / "logs" / "skips"))
        skip_dir.mkdir(parents=True, exist_ok=True)
        (skip_dir / stage).write_text(f"the lab cannot run here: {why}\n")
        print(f"{stage}: skipped: the lab cannot run here: {why}")
        return 0
    c = counts(junit) if junit.exists() else {"tests": 0, "passed": 0, "skipped": 0}
    print(f"{stage}: {c['passed']} passed, {c['skipped']} skipped of {c['tests']}")
    if c["passed"] == 0:
        print(f"{stage}: FAILED: this machine can run the lab, and no lab test passed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
