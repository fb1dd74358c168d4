# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters: fdt_decode (a KHO blob to the structure the facts use), kho_query (jmespath), and the verifications of a
handover from the receiver's facts: kho_regions_verify and kho_liveupdate_verify."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate, regions
from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt, _handover

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - reported when the filter is used
    HAS_JMESPATH = False


def fdt_decode(blob, name=None, byteorder="little"):
    try:
        return _handover.decode_blob(_handover.b64decode(blob), name, byteorder)
    except (_fdt.FdtError, _handover.BlobError, ValueError) as exc:
        raise AnsibleFilterError(f"fdt_decode: {exc}") from exc


def _plain(value):
    """Ansible's tagged and unsafe types as the builtins jmespath's type checks know."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return str.__str__(value)  # an exact str (str() keeps ansible-core 2.16's AnsibleUnsafeText as it is)
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return value


def kho_query(data, expression):
    if not HAS_JMESPATH:
        raise AnsibleFilterError("kho_query needs the jmespath library on the controller")
    try:
        return jmespath.search(str(expression), _plain(data))
    except jmespath.exceptions.JMESPathError as exc:
        raise AnsibleFilterError(f"kho_query: {expression!r}: {exc}") from exc


def kho_liveupdate_verify(before, after, method):
    before, after = _plain(before), _plain(after)
    try:
        liveupdate.check_shape(before, "before")
        liveupdate.check_shape(after, "after")
    except ValueError as exc:
        raise AnsibleFilterError(f"kho_liveupdate_verify takes ansible_facts.kho.liveupdate from before and after the "
                                 f"jump: {exc}") from exc
    if method not in liveupdate.METHODS[1:]:
        raise AnsibleFilterError(f"kho_liveupdate_verify: method is {method!r}, expected kexec or systemctl (as the jump "
                                 "resolved it)")
    return liveupdate.verify(before, after, str(method))


def _region_list(facts: dict, path: tuple, which: str) -> None:
    side = facts.get(path[0])
    if side is not None and not isinstance(side, dict):
        raise AnsibleFilterError(f"kho_regions_verify: {which}.{path[0]} is {side!r:.80}: expected a mapping or null")
    value = (side or {}).get(path[1])
    if value is None:
        return
    good = isinstance(value, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                           and all(isinstance(r.get(k), int) for k in ("start", "size")) for r in value)
    if not good:
        raise AnsibleFilterError(f"kho_regions_verify: {which}.{'.'.join(path)} is {value!r:.80}: expected a list of "
                                 "{name, start, size} as kho_facts returns it")


def kho_regions_verify(before, after, allowed=None):
    before, after = _plain(before), _plain(after)
    if not isinstance(before, dict) or not isinstance(after, dict):
        raise AnsibleFilterError("kho_regions_verify takes ansible_facts.kho from before and after the jump")
    for facts, which in ((before, "before"), (after, "after")):
        for side in ("in", "out"):
            _region_list(facts, (side, "reserve_mem"), which)
    for facts, which, key in ((before, "before", "log"), (after, "after", "log"), (after, "after", "reserve_mem_param")):
        value = facts.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise AnsibleFilterError(f"kho_regions_verify: {which}.{key} is {value!r:.80}: expected a list of strings or null")
    allowed = _plain(allowed) or []
    if not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed):
        raise AnsibleFilterError(f"kho_regions_verify: the regions allowed to go are {allowed!r:.80}: expected a list of names")
    return regions.taken_up(before, after, allowed)


class FilterModule:
    def filters(self):
        return {"fdt_decode": fdt_decode, "kho_query": kho_query, "kho_liveupdate_verify": kho_liveupdate_verify,
                "kho_regions_verify": kho_regions_verify}
