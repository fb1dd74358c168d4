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
    assert res["changed"] and res["acquired"] and not os.path.exists(os.path.dirname(path))  # no dir, no guard
    L.acquire(path, A)
    assert L.release(path, A, check_mode=True)["changed"] and L.read(path) == A


def test_release_only_by_the_holder(path):
    assert L.release(path, A)["changed"] is False
    L.acquire(path, A)
    with pytest.raises(L.HeldByOther) as exc:
        L.release(path, B)
    assert exc.value.holder == A and L.read(path) == A
    assert L.release(path, A)["changed"] and not os.path.exists(path)


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


def test_this_run_is_the_parent_process_with_one_nonce_for_all_its_workers(tmp_path):
    me = _owner.this_run(runs_dir=str(tmp_path), target="web-1")
    nonce = (tmp_path / f"{os.getppid()}-{_owner.start_time(os.getppid())}").read_text()
    assert me["pid"] == os.getppid() and me["controller"] == socket.gethostname() and me["target"] == "web-1"
    assert me["run"] == f"{socket.gethostname()}:{os.getppid()}:{_owner.start_time(os.getppid())}:{nonce}"
    assert me["machine_id"] == _owner.machine_id() and me["pid_namespace"] == _owner.pid_namespace()
    assert _owner.this_run(runs_dir=str(tmp_path))["run"] == me["run"]  # a later task of the same run
    assert stat.S_IMODE(tmp_path.stat().st_mode) in (0o700, 0o755)  # tmp_path itself is pytest's


def _nonce_in_a_worker(runs_dir, barrier, out):
    barrier.wait()
    out.put(_owner.nonce(4242, "99", runs_dir))


def test_racing_workers_of_one_run_agree_on_its_nonce(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_nonce_in_a_worker, args=(str(tmp_path / "runs"), barrier, out)) for _n in range(8)]
    for p in procs:
        p.start()
    nonces = {out.get(timeout=30) for _p in procs}
    for p in procs:
        p.join()
    assert len(nonces) == 1 and None not in nonces
    assert sorted(os.listdir(tmp_path / "runs")) == ["4242-99"]  # no temporary file left


def test_a_live_run_is_never_called_ended(tmp_path):
    assert _owner.ended(_owner.this_run(os.getpid(), runs_dir=str(tmp_path)), runs_dir=str(tmp_path)) is None


def _holder(pid: int, started: str, runs_dir: str, **extra) -> dict:
    nonce = _owner.nonce(pid, started, runs_dir)
    return {"run": f"{socket.gethostname()}:{pid}:{started}:{nonce}", "machine_id": _owner.machine_id(),
            "pid_namespace": _owner.pid_namespace(), **extra}


def _ended_holder(tmp_path) -> dict:
    """The record of a run of this controller whose process has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return _holder(int(proc.stdout), "1", str(tmp_path))


def test_an_exited_run_is_ended(tmp_path):
    assert "has exited" in _owner.ended(_ended_holder(tmp_path), runs_dir=str(tmp_path))


def test_a_recycled_pid_is_ended(tmp_path):
    holder = _holder(os.getpid(), "0", str(tmp_path))
    assert "belongs to another process" in _owner.ended(holder, runs_dir=str(tmp_path))


@pytest.mark.parametrize("change", ["machine_id", "pid_namespace", "nonce", "no nonce file"])
def test_a_run_of_another_machine_or_container_with_this_host_name_is_not_ended(tmp_path, change):
    """Containers, EEs and CI images share host names: only this controller's own runs can be proven over."""
    holder = _holder(os.getpid(), "0", str(tmp_path))  # ended, were it ours
    if change in ("machine_id", "pid_namespace"):
        holder[change] = "other"
    elif change == "nonce":
        holder["run"] = holder["run"].rsplit(":", 1)[0] + ":0123456789abcdef"
    else:
        os.unlink(tmp_path / f"{os.getpid()}-0")
    assert _owner.ended(holder, runs_dir=str(tmp_path)) is None


@pytest.mark.parametrize("run", ["other-controller:1:1:ab", f"{socket.gethostname()}:1:unknown:ab",
                                 f"{socket.gethostname()}:1:1:unknown", f"{socket.gethostname()}:1:1", "garbage", None])
def test_what_cannot_be_told_is_not_ended(run):
    assert _owner.ended({"run": run}) is None


def test_two_inventory_names_of_one_host_are_serialised_within_one_run(path):
    web, alias = {"run": "ctl:1:1:ab", "target": "web-1"}, {"run": "ctl:1:1:ab", "target": "web-1-alias"}
    assert L.acquire(path, web)["acquired"]
    refused = L.acquire(path, alias)
    assert refused["acquired"] is False and refused["holder"]["target"] == "web-1"
    with pytest.raises(L.HeldByOther):
        L.release(path, alias)
    assert L.release(path, web)["changed"] and L.acquire(path, alias)["acquired"]


class _Module:
    """A module run that takes the lock file at ``path`` (what kho_lock and kho_facts' lock do on the host)."""

    def __init__(self, path, owner, nested=False, fail_second=False):
        self.path, self.owner, self.nested, self.fail_second, self.calls = path, owner, nested, fail_second, []

    def __call__(self, break_lock=None):
        self.calls.append(break_lock)
        if self.fail_second and len(self.calls) == 2:
            return {"failed": True, "msg": "the host went away"}
        res = L.take({"path": self.path, "owner": self.owner, "break_lock": break_lock})
        return {"lock": res, "kho_raw": {}} if self.nested else res


@pytest.mark.parametrize("nested", [False, True], ids=["kho_lock", "kho_facts"])
def test_a_lock_of_an_ended_run_is_taken_over_in_a_second_run(path, tmp_path, nested):
    gone = _ended_holder(tmp_path)
    L.acquire(path, gone)
    me = {"run": "ctl:1:1:ab", "target": "web-1"}
    run = _Module(path, me, nested)
    res = _owner.acquire(run, me, path, (lambda r: r["lock"]) if nested else (lambda r: r), runs_dir=str(tmp_path))
    assert run.calls == [None, gone["run"]] and not res.get("failed")
    assert f"took over the lock of run {gone['run']}: its process" in res["msg"]
    assert L.read(path)["run"] == me["run"]


def test_a_live_holder_is_refused_naming_it_and_the_way_out(path, tmp_path):
    other = {"run": "other-ctl:7:7:cd", "user": "sre", "controller": "other-ctl", "since": "2026-11-27T00:00:00Z"}
    L.acquire(path, other)
    me = {"run": "ctl:1:1:ab", "target": "web-1"}
    run = _Module(path, me)
    res = _owner.acquire(run, me, path, runs_dir=str(tmp_path))
    assert run.calls == [None] and res["failed"] and L.read(path)["run"] == other["run"]
    assert "run other-ctl:7:7:cd (sre@other-ctl since 2026-11-27T00:00:00Z)" in res["msg"]
    assert "break_lock: 'other-ctl:7:7:cd'" in res["msg"]


def test_this_run_under_another_inventory_name_is_refused_not_taken_over(path, tmp_path):
    me = _owner.this_run(os.getpid(), runs_dir=str(tmp_path), target="web-1")
    L.acquire(path, {**me, "target": "web-1-alias"})
    run = _Module(path, me)
    res = _owner.acquire(run, me, path, runs_dir=str(tmp_path))
    assert run.calls == [None] and res["failed"] and "for inventory host 'web-1-alias'" in res["msg"]


def test_a_failed_takeover_run_is_returned_as_it_failed(path, tmp_path):
    gone = _ended_holder(tmp_path)
    L.acquire(path, gone)
    me = {"run": "ctl:1:1:ab", "target": "web-1"}
    res = _owner.acquire(_Module(path, me, nested=True, fail_second=True), me, path, lambda r: r["lock"],
                         runs_dir=str(tmp_path))
    assert res == {"failed": True, "msg": "the host went away"} and L.read(path)["run"] == gone["run"]


def test_take_needs_an_owner_with_a_run_id(path):
    for owner in (None, {}, {"run": ""}, {"run": 5}):
        with pytest.raises(ValueError, match="owner must carry a run id"):
            L.take({"path": path, "owner": owner})
    assert L.read(path) is None
