"""The handover lock: compare-and-swap under flock, and who counts as a run that has ended."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import stat
import subprocess
import sys

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import lock as L
from ansible_collections.kexec.kho.plugins.plugin_utils import _owner

A = {"run": "ctl:100:5", "user": "a"}
B = {"run": "ctl:200:6", "user": "b"}


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "run" / "kexec-kho" / "handover.lock")


def test_acquire_is_idempotent_and_private(path):
    first = L.acquire(path, A)
    assert (first["changed"], first["acquired"], first["previous"]) == (True, True, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert json.loads(open(path, encoding="utf-8").read()) == A
    assert L.acquire(path, A)["changed"] is False


def test_another_run_is_refused_unless_named(path):
    L.acquire(path, A)
    refused = L.acquire(path, B)
    assert (refused["acquired"], refused["changed"], refused["holder"]) == (False, False, A)
    assert L.acquire(path, B, replace="ctl:999:1")["acquired"] is False  # only the named holder is replaced
    taken = L.acquire(path, B, replace=A["run"])
    assert (taken["acquired"], taken["previous"]) == (True, A) and L.read(path) == B


def test_check_mode_writes_nothing(path):
    res = L.acquire(path, A, check_mode=True)
    assert res["changed"] and res["acquired"] and not os.path.exists(path)
    L.acquire(path, A)
    assert L.release(path, A["run"], check_mode=True)["changed"] and L.read(path) == A


def test_release_only_by_the_holder(path):
    assert L.release(path, A["run"])["changed"] is False
    L.acquire(path, A)
    with pytest.raises(L.HeldByOther) as exc:
        L.release(path, B["run"])
    assert exc.value.holder == A and L.read(path) == A
    assert L.release(path, A["run"])["changed"] and not os.path.exists(path)


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"run": 7}'])
def test_an_unreadable_record_still_holds(path, content):
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as fh:
        fh.write(content)
    res = L.acquire(path, A)
    assert res["acquired"] is False and res["holder"]["run"].startswith("unknown (unreadable record")
    assert L.acquire(path, A, replace=res["holder"]["run"])["acquired"]


def _race(path, n, barrier, out):
    barrier.wait()
    out.put((n, L.acquire(path, {"run": f"ctl:{n}:1"})["acquired"]))


def test_racing_runs_one_wins(path):
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(path, n, barrier, out)) for n in range(8)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=30) for p in procs)
    for p in procs:
        p.join()
    winners = [n for n, won in results.items() if won]
    assert len(winners) == 1 and L.read(path)["run"] == f"ctl:{winners[0]}:1"


def test_this_run_is_the_parent_process():
    me = _owner.this_run()
    assert me["pid"] == os.getppid() and me["controller"] == socket.gethostname()
    assert me["run"] == f"{socket.gethostname()}:{os.getppid()}:{_owner.start_time(os.getppid())}"


def test_a_live_run_is_never_called_ended():
    assert _owner.ended(_owner.this_run(os.getpid())) is None


def test_an_exited_run_is_ended():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    gone = _owner.this_run(int(proc.stdout))
    assert "has exited" in _owner.ended({**gone, "run": f"{socket.gethostname()}:{int(proc.stdout)}:1"})


def test_a_recycled_pid_is_ended():
    me = _owner.this_run(os.getpid())
    assert "belongs to another process" in _owner.ended({"run": f"{me['controller']}:{os.getpid()}:0"})


@pytest.mark.parametrize("run", ["other-controller:1:1", f"{socket.gethostname()}:1:unknown", "garbage", None])
def test_what_cannot_be_told_is_not_ended(run):
    assert _owner.ended({"run": run}) is None
