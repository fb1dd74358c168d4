# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether this controller can decode and verify a handover, before anything on a host changes.  Not a public API."""

from __future__ import annotations

import importlib.util

from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt

INSTALL = ("install the collection's requirements.txt into the controller's Python (pip install -r requirements.txt), "
           "or build the execution environment from meta/execution-environment.yml")
# The role's verification filters, all in plugins/filter/kho.py.
FILTERS = ("kexec.kho.kho_regions_verify", "kexec.kho.kho_liveupdate_verify", "kexec.kho.kho_query")


def _filters_missing() -> list:
    try:
        from ansible_collections.kexec.kho.plugins.filter.kho import FilterModule
        present = FilterModule().filters()
    except ImportError:
        present = {}
    return [name for name in FILTERS if name.rsplit(".", 1)[-1] not in present]


def missing() -> list:
    """What the controller lacks, each part named with how to get it; empty when it is ready."""
    lacks = []
    if not _fdt.HAS_PYFDT:
        lacks.append(f"the Python library pyfdt ({_fdt.PYFDT_IMPORT_ERROR})")
    if importlib.util.find_spec("jmespath") is None:
        lacks.append("the Python library jmespath")
    lacks.extend(f"the filter {name}" for name in _filters_missing())
    return lacks


def refusal(lacks: list) -> str:
    return f"this controller cannot decode or verify a handover: it lacks {', '.join(lacks)}; {INSTALL}"
