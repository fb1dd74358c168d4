"""fdt_decode and kho_query, including Ansible's own (tagged, unsafe) types."""

from __future__ import annotations

import base64

import pytest
from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.kexec.kho.plugins.filter.kho import fdt_decode, kho_query


def test_fdt_decode_real_memblock(fixtures):
    blob = base64.b64encode((fixtures / "handover1" / "in_sub_fdts_memblock").read_bytes()).decode()
    rec = fdt_decode(wrap_var(blob))
    assert rec["reserve_mem"][0] == {"name": "oops", "start": 0x3EB00000, "size": 0x100000}


def test_fdt_decode_real_root_and_metadata(fixtures):
    root = fdt_decode(base64.b64encode((fixtures / "handover1" / "in_fdt").read_bytes()).decode())
    assert root["handover"]["compatible"] == "kho-v4"
    assert set(root["handover"]["listed"]) == {"memblock", "kho_test", "kexec-metadata"}
    meta = fdt_decode(base64.b64encode((fixtures / "handover2" / "in_sub_fdts_kexec-metadata").read_bytes()).decode(),
                      "kexec-metadata")
    assert meta["metadata"] == {"version": 1, "previous_release": "7.3.4", "kexec_count": 2}


def test_fdt_decode_errors_are_filter_errors(fixtures):
    truncated = base64.b64encode((fixtures / "cold" / "out_fdt").read_bytes()).decode()
    with pytest.raises(AnsibleFilterError, match="truncated"):
        fdt_decode(truncated)
    with pytest.raises(AnsibleFilterError, match="base64"):
        fdt_decode("%%%")
    with pytest.raises(AnsibleFilterError, match="byteorder"):
        fdt_decode(truncated, None, "middle")


def test_kho_query_on_ansible_types():
    facts = wrap_var({"in": {"reserve_mem": [{"name": "oops", "start": 5}, {"name": "trace", "start": 9}]},
                      "release": "7.3.4"})
    assert kho_query(facts, wrap_var("in.reserve_mem[?name=='oops'].start | [0]")) == 5
    assert kho_query(facts, "starts_with(release, '7.')") is True
    assert kho_query(facts, "contains(in.reserve_mem[].name, 'trace')") is True
    assert kho_query(facts, "length(keys(@))") == 2


def test_kho_query_bad_expression():
    with pytest.raises(AnsibleFilterError, match="kho_query"):
        kho_query({}, "in.[")
