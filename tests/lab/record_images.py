"""Record the image facts (image.inspect) of the lab's kernels of each release and format variant into
tests/fixtures/releases/images.json, for the target check's units (#35).  Run after the kernels are built:
    python tests/lab/record_images.py [DEST]   (from the layout, build/ansible_collections/kexec/kho; the
    kernels not built yet are left out)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[4]))  # build/, where ansible_collections/ lives

from lab_build import FORMATS, format_dir, kernel_dir  # noqa: E402
from lab_common import RELEASES  # noqa: E402
from ansible_collections.kexec.kho.plugins.module_utils._kho import image  # noqa: E402

KEPT = ("release", "compression", "readable", "why", "compatibles", "params", "config_source")
CONFIG = ("CONFIG_KEXEC_HANDOVER", "CONFIG_LIVEUPDATE", "CONFIG_LIVEUPDATE_MEMFD")


def record(name: str, bzimage: Path) -> dict:
    rec = image.inspect(str(bzimage))
    out = {k: rec.get(k) for k in KEPT}
    out["path"] = f"/boot/vmlinuz-{name.replace('+', '-')}"
    out["config"] = {k: (rec.get("config") or {}).get(k) for k in CONFIG}
    return out


def main() -> None:
    built = {rel: kernel_dir(release=rel) / "bzImage" for rel in RELEASES}
    built.update({f"7.3.4+{fmt}": format_dir(fmt) / "bzImage" for fmt in FORMATS})
    found = {name: record(name, path) for name, path in built.items() if path.exists()}
    dest = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[0] / "fixtures" / "releases" / "images.json"
    dest.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(dest)


if __name__ == "__main__":
    main()
