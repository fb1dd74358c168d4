"""kho_facts' action: a controller that cannot decode is refused before the lock (the first change); typed options."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ansible_collections.kexec.kho.plugins.action import kho_facts as action
from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt, _ready

RAW = {"out": {"present": True, "fdt": None, "sub_blobs": {"memblock": "AAAA"}}, "in": {"present": False}}


def run(monkeypatch, raw=None, **args):
    runs = []

    def module(module_name, module_args, task_vars):
        runs.append(module_args)
        return {"changed": False, "kho_raw": raw or RAW}
    task = SimpleNamespace(args=args, check_mode=False, async_val=0, action="kexec.kho.kho_facts")
    plugin = action.ActionModule(task, SimpleNamespace(_shell=SimpleNamespace(tmpdir=None)), SimpleNamespace(),
                                 None, None, None)
    monkeypatch.setattr(plugin, "_execute_module", module)
    return plugin.run(task_vars={"inventory_hostname": "web-1"}), runs


def test_a_controller_without_pyfdt_is_refused_before_the_lock(monkeypatch):
    monkeypatch.setattr(_fdt, "HAS_PYFDT", False)
    res, runs = run(monkeypatch, lock={})
    assert res["failed"] and runs == []  # nothing ran on the host: no lock taken
    assert "lacks the Python library pyfdt" in res["msg"] and "requirements.txt" in res["msg"]
    assert res["controller_missing"][0].startswith("the Python library pyfdt")


def test_an_unlocked_read_reports_what_the_controller_lacks(monkeypatch):
    monkeypatch.setattr(_ready.importlib.util, "find_spec", lambda name: None)
    res, runs = run(monkeypatch)
    assert len(runs) == 1 and res["controller_missing"] == ["the Python library jmespath"]


@pytest.mark.parametrize("value, raw", [("no", False), ("yes", True), (False, False), ("true", True)])
def test_include_raw_is_read_as_a_boolean(monkeypatch, value, raw):
    res, _runs = run(monkeypatch, include_raw=value)
    assert ("raw" in res["ansible_facts"]["kho"]) is raw


def test_include_raw_that_is_no_boolean_is_refused(monkeypatch):
    res, runs = run(monkeypatch, include_raw="maybe")
    assert res["failed"] and "include_raw" in res["msg"] and runs == []


def test_a_host_over_the_decode_budget_fails_with_the_reason(monkeypatch):
    many = {"out": {"present": True, "fdt": None, "sub_blobs": {f"b{n}": "AAAA" for n in range(100)}}}
    res, _runs = run(monkeypatch, raw=many)
    assert res["failed"] and "refused to decode this host's KHO blobs" in res["msg"]
    assert res["ansible_facts"]["kho"]["over_budget"] in res["msg"]
    res, _runs = run(monkeypatch)
    assert not res.get("failed") and "over_budget" not in res["ansible_facts"]["kho"]
