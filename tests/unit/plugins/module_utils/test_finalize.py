"""module_utils/_kho/finalize.py: kho_finalize's state logic against simulated trees of each finalize form."""

from __future__ import annotations


import pytest
from fakehost import make_host  # pylint: disable=import-error  # tests/

from ansible_collections.kexec.kho.plugins.module_utils._kho import finalize as F


@pytest.mark.parametrize("form", ["6.16", "6.19"])
def test_finalize_is_idempotent_and_reads_first(tmp_path, fixtures, monkeypatch, form):
    kho = make_host(tmp_path, f"finalize-{form}", form, monkeypatch)
    first = F.transition(kho, True, check_mode=False)
    assert (first["changed"], first["before"], first["after"]) == (True, False, True)
    second = F.transition(kho, True, check_mode=False)
    assert second["changed"] is False and kho.fake.writes == [1]


def test_abort_first_form(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.16", "6.16", monkeypatch)
    F.transition(kho, True, False)
    res = F.transition(kho, False, False)
    assert res["changed"] and res["after"] is False
    assert F.transition(kho, False, False)["changed"] is False
    assert kho.fake.writes == [1, 0]


def test_abort_second_form_says_unload(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.19", "6.19", monkeypatch)
    F.transition(kho, True, False)
    with pytest.raises(F.FinalizeError, match="kho_kexec state=unloaded"):
        F.transition(kho, False, False)


def test_check_mode_writes_nothing(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.16", "6.16", monkeypatch)
    res = F.transition(kho, True, check_mode=True)
    assert res["changed"] and res["after"] is True and kho.fake.writes == [] and kho.finalized() is False


def test_live_era_is_an_honest_noop(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    res = F.transition(kho, True, False)
    assert res == {**res, "changed": False, "finalize_supported": False, "before": None, "after": None}
    assert "no finalize state" in res["msg"]


def test_no_kho_names_the_parameter(tmp_path, fixtures):
    with pytest.raises(F.FinalizeError, match="kho=on"):
        F.transition(make_host(tmp_path, "builtin-off"), True, False)


# ---------------------------------------------------------------- kho_kexec
