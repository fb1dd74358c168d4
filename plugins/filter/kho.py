# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters: fdt_decode (a KHO blob to the structure the facts use) and kho_query (jmespath)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
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
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        raise AnsibleFilterError("kho_liveupdate_verify takes ansible_facts.kho.liveupdate from before and after the jump")
    return liveupdate.verify(_plain(before), _plain(after), str(method))


class FilterModule:
    def filters(self):
        return {"fdt_decode": fdt_decode, "kho_query": kho_query, "kho_liveupdate_verify": kho_liveupdate_verify}
