"""Handover benchmarks on the lab: kexec.kho against the floor and what an operator would write.

    .venv/bin/python bench/lab_bench.py [--repeat 5] [--fleet 1,2,4] [--only NAME ...] [--limit S]
    .venv/bin/python bench/lab_bench.py --no-lab          # the controller's figures alone (as bench/controller_bench.py)
    .venv/bin/python bench/lab_bench.py --window          # the window of a staged handover (issue 38)

Prints a table (median and spread of each scenario) and writes it as JSON under
bench/results/, with the controller's figures (bench/controller_bench.py) beside them.  Boots only
the lab guests it needs and stops every one it started.  Figures, not pass marks: the targets
are printed as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "lab"))
sys.path.insert(0, str(ROOT / "tests"))
import lab  # noqa: E402  pylint: disable=wrong-import-position
import controller_bench as controller  # noqa: E402  pylint: disable=wrong-import-position  # beside this file
from controller_bench import ratio, stats  # noqa: E402  pylint: disable=wrong-import-position

BIN = Path(sys.executable).parent
KERNEL = lab.GUEST_KERNEL
LIMIT = 150  # seconds a scenario may take before it is recorded as 'did not return' (the default of --limit)
# The reboot plugin's scenarios: a dead session ends after about 3 s without an answer, not never.
REBOOT_SSH_ARGS = "-o ServerAliveInterval=1 -o ServerAliveCountMax=3"


class Console(threading.Thread):
    """Timestamps the guest's serial console lines that mark a jump's parts (the kernel prints no times of its own).

    The bench watches the console, not the network: until 2026-11-26 a 50 ms SSH banner poller stood beside each
    run, and QEMU's user network kept every attempt made while the guest was down and delivered them all when sshd
    started: sshd's MaxStartups throttling then dropped the run's own logins, and the forks slowed the guest.
    """

    MARKS = {"kernel_gone": (b"kexec_core: Starting new kernel", b"reboot: Restarting system"),
             "kernel_start": (b"Linux version ",), "init": (b"Run /sbin/init",),
             "sshd": (b"Started \x1b[0;1;39mssh.service",)}

    def __init__(self, serial: str):
        super().__init__(daemon=True)
        self.serial, self.seen, self.stop = serial, {}, False

    def run(self):
        with open(self.serial, "rb") as fh:
            fh.seek(0, 2)
            buf = b""
            while not self.stop:
                data = fh.read()
                if not data:
                    time.sleep(0.02)
                    continue
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    for mark, texts in self.MARKS.items():
                        if any(text in line for text in texts):
                            self.seen[mark] = time.monotonic()  # the last one: the boot the run waited for


# Runs ansible-playbook in this interpreter and, at its exit, writes its own CPU (the strategy's loop: startup, the
# 1 ms internal poll while tasks run, callbacks; shared by every host of a run) and its children's (the forked
# workers that run each host's tasks, with their SSH and local processes: per host) to $KHO_BENCH_RUSAGE.
SPLIT_CPU = """\
import atexit, json, os, resource, runpy, sys
def split():
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(os.environ["KHO_BENCH_RUSAGE"], "w") as fh:
        json.dump({"main": me.ru_utime + me.ru_stime, "workers": kids.ru_utime + kids.ru_stime}, fh)
atexit.register(split)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children (ansible-playbook, its workers, ssh)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# A run's parts on the guest's console: ours before the old kernel goes, the guest's boot (not ours: the emulated
# guest's kernel and user space to sshd), ours from sshd to the verdict.  The targets are on ours only.
PARTS = {"before": ("start->kernel_gone",), "boot": ("kernel_gone->kernel_start", "kernel_start->init", "init->sshd"),
         "after": ("sshd->returned",)}


def parts(console: dict) -> dict:
    """The run's parts (PARTS) from console_phases' spans; None where a mark was missed."""
    out = {}
    for part, spans in PARTS.items():
        values = [console.get(k) for k in spans]
        out[part] = round(sum(values), 2) if values and None not in values else None
    return out


def console_phases(start: float, console: Console, returned: float | None) -> dict:
    """Seconds of each part of the run, from the console marks; None where a mark was not seen."""
    marks = [("start", start), *((m, console.seen.get(m)) for m in Console.MARKS), ("returned", returned)]
    out = {}
    for (name_a, a), (name_b, b) in zip(marks, marks[1:]):
        out[f"{name_a}->{name_b}"] = round(b - a, 2) if a is not None and b is not None else None
    return out


def env() -> dict:
    build = ROOT.parents[2] if ROOT.parents[1].name == "ansible_collections" else None
    out = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="False",
               PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_CALLBACKS_ENABLED="kexec.kho.kho_report,kho_bench",
               ANSIBLE_CALLBACK_PLUGINS=str(HERE / "callback_plugins"))
    if build:
        out["ANSIBLE_COLLECTIONS_PATH"] = str(build)
    return out


def playbook(inventory: str, tasks: str, extra: dict | None = None, limit: float = LIMIT,
             play: str = "hosts: kho_lab\n  gather_facts: false\n", stage: str | None = None) -> dict:
    """One one-play playbook, run (with ``stage``, two: a play of those tasks first, then one named switch of
    ``tasks``, in the same run): as run_ansible, with ``returned`` (when its last task, named returned, started)."""
    with tempfile.TemporaryDirectory() as tmp:
        pb = Path(tmp) / "pb.yml"
        first = f"- name: stage\n  {play}  tasks:\n{stage}" if stage is not None else ""
        pb.write_text(f"{first}- name: switch\n  {play}  tasks:\n{tasks}"
                      "    - name: returned\n      ansible.builtin.debug: {msg: returned}\n")
        return run_ansible(["-i", inventory, str(pb), "-e", json.dumps(extra or {})], limit)


def run_ansible(argv: list, limit: float = LIMIT) -> dict:
    """ansible-playbook with these arguments: its ``seconds`` (None when it did not return within ``limit``),
    ``start``, ``returned`` (when a task named returned started) and ``switch_start`` (when a play named switch
    started), all on this clock, ``out`` (its text, for a failure's note), and from JSON files only: the report's
    ``summary``, the CPU ``split`` (SPLIT_CPU) and kho_kexec's ``phases`` (the bench's callback,
    bench/callback_plugins/kho_bench.py)."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {k: Path(tmp) / f"{k}.json" for k in ("summary", "split", "record")}
        e = dict(env(), KHO_REPORT_JSON=str(files["summary"]), KHO_BENCH_RUSAGE=str(files["split"]),
                 KHO_BENCH_RECORD=str(files["record"]))
        start, wall_start = time.monotonic(), time.time()
        try:
            proc = subprocess.run([sys.executable, "-c", SPLIT_CPU, str(BIN / "ansible-playbook"), *argv],
                                  capture_output=True, text=True, env=e, timeout=limit, check=False)
        except subprocess.TimeoutExpired:
            return {"seconds": None, "start": start, "returned": None, "switch_start": None, "summary": {},
                    "out": f"did not return within {limit} s", "split": {}, "phases": None}
        seconds = time.monotonic() - start
        if proc.returncode:
            raise RuntimeError(proc.stdout[-3000:])
        got = {k: json.loads(f.read_text()) if f.exists() else {} for k, f in files.items()}
        stamps = {k: got["record"].get(k) for k in ("returned", "switch")}
        here = {k: start + (v - wall_start) if v else None for k, v in stamps.items()}
        return {"seconds": seconds, "start": start, "returned": here["returned"], "switch_start": here["switch"],
                "out": proc.stdout, "summary": got["summary"], "split": got["split"], "phases": got["record"].get("phases")}


def floor(guest: dict) -> dict:
    console = Console(guest["serial"])
    console.start()
    start, cpu = time.monotonic(), children_cpu()
    subprocess.run(lab.ssh_argv(guest, f"kexec -s -l {KERNEL} --reuse-cmdline && "
                                       "(setsid sh -c 'sleep 0.2; kexec -e' </dev/null >/dev/null 2>&1 &)"),
                   check=True, capture_output=True)
    while lab.ssh_banner(guest["port"], 0.5):  # as an operator's loop would: until the old sshd is gone,
        time.sleep(0.5)  # then until the new one answers (no faster: see Console)
    while not lab.ssh_banner(guest["port"], 0.5):
        time.sleep(0.5)
    subprocess.run(lab.ssh_argv(guest, "true"), check=True)
    console.stop = True
    returned = time.monotonic()
    return {"seconds": returned - start, "console": console_phases(start, console, returned),
            "cpu": round(children_cpu() - cpu, 2)}


def warm(up: dict) -> dict:
    """One untimed jump first: the first one after a cold boot also waits for the kho_test selftest's restore."""
    lab.log(f"warm-up jump: {floor(up['guests'][0])['seconds']:.1f} s")
    return up


def with_banner(guest: dict, fn) -> dict:
    console = Console(guest["serial"])
    console.start()
    start, cpu = time.monotonic(), children_cpu()
    ran = fn()
    cpu = round(children_cpu() - cpu, 2)  # the controller's: ansible-playbook's process tree
    console.stop = True
    sshd, returned = console.seen.get("sshd"), ran["returned"]
    return {"seconds": ran["seconds"], "detect_latency": (returned - sshd) if returned and sshd else None,
            "note": None if ran["seconds"] else ran["out"], "summary": ran["summary"],
            "console": console_phases(start, console, returned), "phases": ran["phases"], "cpu": cpu,
            "cpu_main": ran["split"].get("main"), "cpu_workers": ran["split"].get("workers")}


def scenarios(guest: dict, inventory: str, limit: float) -> dict:
    kexec_task = (f"    - kexec.kho.kho_kexec: {{state: executed, kernel: {KERNEL}}}\n"
                  "      register: jump\n")

    def reboot_with(command):
        # The same jump as kho_kexec's: the same load, timed with it, then the reboot plugin's trigger and wait.
        # A command that never returns (kexec -e) leaves the plugin's SSH session waiting on a host that is gone:
        # nothing ends it but SSH's keepalive, which an operator using this recipe has to set (REBOOT_SSH_ARGS), on
        # the ControlPersist master too: one left by the scenario before, made without it, hung every run until
        # 2026-11-26 (its mux client waited on QEMU's user network for a guest that had jumped).  So each run gets a
        # control path directory of its own, and its master is made with the keepalive.
        def run():
            with tempfile.TemporaryDirectory(prefix="kho-cp-") as cp:
                return playbook(inventory, f"    - kexec.kho.kho_kexec: {{state: loaded, kernel: {KERNEL}}}\n"
                                           "    - ansible.builtin.reboot:\n"
                                           f"        reboot_command: {command}\n"
                                           f"        reboot_timeout: {int(limit) - 30}\n",
                                {"ansible_ssh_extra_args": REBOOT_SSH_ARGS, "ansible_control_path_dir": cp}, limit)
        return with_banner(guest, run)
    return {
        "floor": lambda: floor(guest),
        "kho_kexec": lambda: with_banner(guest, lambda: playbook(inventory, kexec_task, limit=limit)),
        "reboot_systemctl_kexec": lambda: reboot_with("systemctl kexec"),
        "reboot_kexec_e": lambda: reboot_with("kexec -e"),
        "reboot_full": lambda: with_banner(guest, lambda: playbook(inventory, "    - ansible.builtin.reboot:\n", limit=limit)),
        "role": lambda: with_banner(guest, lambda: playbook(
            inventory, "    - ansible.builtin.include_role: {name: kexec.kho.handover}\n",
            {"kho_handover_kernel": KERNEL}, limit)),
    }


# ------------------------------------------------------------ the window (issue 38): staged, then switched

class FirstAnswer(threading.Thread):
    """The new boot's first SSH banner, probed every 0.1 s only once the console shows its sshd started (never while
    the guest is down: see Console).  With kexec -e nothing stops the old sshd before the jump, so the outage, the
    old sshd's last answer to the new one's first, is the console's kernel_gone to this answer."""

    def __init__(self, guest: dict, console: Console):
        super().__init__(daemon=True)
        self.guest, self.console, self.at, self.stop = guest, console, None, False

    def run(self):
        while not self.stop and self.at is None:
            gone, sshd = (self.console.seen.get(k) for k in ("kernel_gone", "sshd"))
            if gone and sshd and sshd > gone and lab.ssh_banner(self.guest["port"], 0.5):
                self.at = time.monotonic()
            time.sleep(0.1)


WINDOW = ("to_gone", "boot", "to_verdict", "outage")  # the window's parts (see window_run)


def window_run(guest: dict, fn) -> dict:
    """One staged run (``fn``: its stage untimed, then its switch), split into the window's parts: switch start to
    the old kernel gone (console), the guest's boot (not ours), its sshd to the verdict, and the outage
    (FirstAnswer); the controller's CPU for the whole run (stage and switch), ansible-playbook and its workers apart."""
    console = Console(guest["serial"])
    answer = FirstAnswer(guest, console)
    console.start()
    answer.start()
    cpu = children_cpu()
    ran = fn()
    cpu = round(children_cpu() - cpu, 2)
    if answer.at is None:
        time.sleep(0.5)  # the probe's last round
    console.stop = answer.stop = True
    gone, sshd, switch, returned = console.seen.get("kernel_gone"), console.seen.get("sshd"), ran["switch_start"], ran["returned"]

    def span(a, b):
        return round(b - a, 2) if a is not None and b is not None else None
    return {"seconds": span(switch, returned), "note": None if ran["seconds"] else ran["out"],
            "window": {"to_gone": span(switch, gone), "boot": span(gone, sshd), "to_verdict": span(sshd, returned),
                       "outage": span(gone, answer.at)},
            "verdict": _first(ran["summary"]).get("verdict"),
            "timings": _first(ran["summary"]).get("timings") or {},  # the role's own split (the report's timings)
            "cpu": cpu, "cpu_main": ran["split"].get("main"), "cpu_workers": ran["split"].get("workers")}


def _hosts(summary) -> dict:
    """The report's summary JSON, host by host ({} where there is none)."""
    hosts = summary.get("hosts") if isinstance(summary, dict) and isinstance(summary.get("hosts"), dict) else summary
    return hosts if isinstance(hosts, dict) else {}


def _first(summary) -> dict:
    """The one host's record of the report's summary JSON ({} where there is none)."""
    return next(iter(_hosts(summary).values()), {})


def window_floor(guest: dict) -> dict:
    """The hand procedure: the load before (untimed, the host serves), then a detached kexec -e over one SSH
    command, a banner loop (0.25 s, the role's poll interval) until the old sshd is gone and the new one answers, and
    one SSH command reading the same evidence files as the role's switch (plugin_utils/_evidence's read)."""
    from ansible_collections.kexec.kho.plugins.plugin_utils import _evidence  # pylint: disable=import-outside-toplevel
    subprocess.run(lab.ssh_argv(guest, f"kexec -s -l {KERNEL} --reuse-cmdline"), check=True, capture_output=True)
    start = time.monotonic()
    subprocess.run(lab.ssh_argv(guest, "(setsid sh -c 'sleep 0.2; kexec -e' </dev/null >/dev/null 2>&1 &)"),
                   check=True, capture_output=True)
    while lab.ssh_banner(guest["port"], 0.5):
        time.sleep(0.25)
    while not lab.ssh_banner(guest["port"], 0.5):
        time.sleep(0.25)
    evidence = subprocess.run(lab.ssh_argv(guest, _evidence.command()), check=True, capture_output=True, text=True)
    _evidence.decode(evidence.stdout)  # the same evidence, whole
    returned = time.monotonic()
    return {"seconds": returned - start, "switch_start": start, "returned": returned, "out": "", "summary": {},
            "split": {}}


def window_scenarios(guest: dict, inventory: str, limit: float) -> dict:
    role = "    - ansible.builtin.include_role: {{name: kexec.kho.handover}}\n      vars: {{kho_handover_part: {}}}\n"

    def reboot():
        with tempfile.TemporaryDirectory(prefix="kho-cp-") as cp:
            return playbook(inventory, "    - ansible.builtin.reboot:\n        reboot_command: kexec -e\n"
                                       f"        reboot_timeout: {int(limit) - 30}\n",
                            {"ansible_ssh_extra_args": REBOOT_SSH_ARGS, "ansible_control_path_dir": cp}, limit,
                            stage=f"    - kexec.kho.kho_kexec: {{state: loaded, kernel: {KERNEL}}}\n")
    return {
        "switch_floor": lambda: window_run(guest, lambda: window_floor(guest)),
        "switch_role_staged": lambda: window_run(guest, lambda: playbook(
            inventory, role.format("switch"), {"kho_handover_kernel": KERNEL}, limit, stage=role.format("stage"))),
        "switch_reboot_kexec_e": lambda: window_run(guest, reboot),
    }


def window_targets(sc: dict) -> dict:
    """The window's targets, each a ratio to the same part of the floor (and of the reboot plugin) in the same run."""
    med = {(name, part): ((s.get("window") or {}).get(part) or {}).get("median") for name, s in sc.items() for part in WINDOW}
    role, floor_, reboot = "switch_role_staged", "switch_floor", "switch_reboot_kexec_e"
    out = {}
    for part, bound in (("to_gone", 1.3), ("to_verdict", 1.5), ("outage", 1.1)):
        out[f"{part}: staged role / floor (target <= {bound})"] = ratio(med.get((role, part)), med.get((floor_, part)))
        out[f"{part}: staged role / reboot(kexec -e) (target <= 1.0)"] = ratio(med.get((role, part)), med.get((reboot, part)))
    cpu = (sc.get(role) or {}).get("controller_cpu") or {}
    out["controller CPU-seconds per host, staged role, ansible-playbook and its workers (target <= 0.5)"] = cpu.get("median")
    return out


FLEET = 4  # guests of the staged fleet run (as tests/integration/test_staged.py), switched two at a time


def fleet_run(inventory: str, targets: str, limit: float) -> dict:
    """The collection's playbook in staged mode (kexec.kho.handover, kho_staged) over ``targets``, two at a time:
    its seconds, the controller's CPU (ansible-playbook and its workers apart) and the hosts' verdicts."""
    extra = {"kho_targets": targets, "kho_staged": True, "kho_serial": 2, "kho_handover_kernel": KERNEL}
    cpu = children_cpu()
    ran = run_ansible(["-i", inventory, "kexec.kho.handover", "-e", json.dumps(extra)], limit)
    return {"seconds": ran["seconds"], "cpu": round(children_cpu() - cpu, 2), "cpu_main": ran["split"].get("main"),
            "cpu_workers": ran["split"].get("workers"), "note": None if ran["seconds"] else ran["out"],
            "verdicts": sorted(str(h.get("verdict")) for h in _hosts(ran["summary"]).values())}


def beyond_first(one: list, many: list, n: int) -> dict:
    """The controller's CPU per host beyond the first: (the n-host run's median - the one-host run's) / (n - 1), so
    that what a run pays once (ansible-playbook's start, the plays' own tasks) cancels; None where a side is missing."""
    out = {}
    for k in ("cpu", "cpu_main", "cpu_workers"):
        a, b = (stats([r.get(k) for r in rs])["median"] for rs in (one, many))
        out[k] = round((b - a) / (n - 1), 3) if a is not None and b is not None else None
    return out


def window_fleet(args) -> dict:
    """--window's fleet part: the staged playbook over one of FLEET guests and over all of them, round-robin (at
    most 3 rounds: a fleet round takes minutes), for the controller's CPU per host of a larger run."""
    try:
        up = lab.up(lab.command("up", "--name", "bench-wf", "-n", str(FLEET), "--timeout", "300"))
        one = up["guests"][0]["name"]
        table = {"one_host": lambda: fleet_run(up["inventory"], one, args.limit * 2),
                 "fleet": lambda: fleet_run(up["inventory"], "kho_lab", args.limit * 4)}
        runs = round_robin(table, list(table), min(args.repeat, 3))
    finally:
        lab.down(lab.command("down", "--name", "bench-wf"))
    return {"guests": FLEET, "serial": 2,
            "runs": {name: {"seconds": stats([r.get("seconds") for r in rs]),
                            "controller_cpu": stats([r.get("cpu") for r in rs]),
                            "controller_cpu_main": stats([r.get("cpu_main") for r in rs]),
                            "controller_cpu_workers": stats([r.get("cpu_workers") for r in rs]),
                            "verdicts": sorted({v for r in rs for v in r.get("verdicts") or []}),
                            "notes": sorted({r["note"][:200] for r in rs if r.get("note")})}
                     for name, rs in runs.items()},
            "per_host_beyond_first": beyond_first(runs["one_host"], runs["fleet"], FLEET)}


def window_main(args, results: dict) -> None:
    """--window: the window scenarios, round-robin, ``args.repeat`` rounds, on one guest."""
    try:
        up = warm(lab.up(lab.command("up", "--name", "bench-w")))
        results["accel"] = up["guests"][0]["accel"]
        guest, inventory = up["guests"][0], up["inventory"]
        table = window_scenarios(guest, inventory, args.limit)
        runs = round_robin(table, list(table), args.repeat)
    finally:
        lab.down(lab.command("down", "--name", "bench-w"))
    results["window"] = {
        name: {"seconds": stats([r.get("seconds") for r in rs]),
               "window": {k: stats([(r.get("window") or {}).get(k) for r in rs]) for k in WINDOW},
               "verdicts": sorted({str(r.get("verdict")) for r in rs}),
               "role_timings": {k: stats([(r.get("timings") or {}).get(k) for r in rs])
                                for k in sorted({k for r in rs for k in (r.get("timings") or {})})},
               "notes": sorted({r["note"][:200] for r in rs if r.get("note")}),
               "controller_cpu": stats([r.get("cpu") for r in rs]),
               "controller_cpu_main": stats([r.get("cpu_main") for r in rs]),
               "controller_cpu_workers": stats([r.get("cpu_workers") for r in rs])}
        for name, rs in runs.items()}
    results["window_fleet"] = window_fleet(args)
    results["rollout_decision"] = {k: {n: v for n, v in r.items() if n != "decided"}
                                   for k, r in controller.rollout_decision().items()}
    role, beyond = results["window"]["switch_role_staged"], results["window_fleet"]["per_host_beyond_first"]
    results["cpu"] = {"per_host": role["controller_cpu"]["median"], "ansible_playbook": role["controller_cpu_main"]["median"],
                      "workers": role["controller_cpu_workers"]["median"], "per_host_beyond_first": beyond,
                      "simulated_1000_staged": ((results.get("staged_fleet") or {}).get("1000") or {}).get("cpu_per_host")}
    results["targets"] = {**window_targets(results["window"]),
                          f"controller CPU-seconds per host beyond the first, {FLEET} guests staged, switched 2 at a time "
                          "(target <= 0.5)": beyond["cpu"],
                          **{k: v for k, v in controller.targets(results).items() if k.startswith("staged")}}
    print(f"\nkexec.kho window bench, {results['date']}, accel {results.get('accel')}, {args.repeat} rounds (median s)")
    for name, s in results["window"].items():
        print(f"  {name:24} " + "  ".join(f"{k} {s['window'][k]['median']}" for k in WINDOW)
              + f"  CPU {s['controller_cpu']['median']} (main {s['controller_cpu_main']['median']}, workers "
                f"{s['controller_cpu_workers']['median']})  verdicts {s['verdicts']}")
        split = "  ".join(f"{k} {v['median']}" for k, v in s["role_timings"].items() if v["n"])
        if split:
            print(f"    {name} as the role times it (median s): {split}")
    for name, f in results["window_fleet"]["runs"].items():
        print(f"  staged playbook, {name:8} {f['seconds']['median']} s  CPU {f['controller_cpu']['median']} (main "
              f"{f['controller_cpu_main']['median']}, workers {f['controller_cpu_workers']['median']})  verdicts {f['verdicts']}")
    print(f"  per host beyond the first: {beyond}")
    for name, r in results["rollout_decision"].items():
        print(f"  the rollout stop through hostvars, {name:28} {r['cpu_seconds']} CPU-s, {r['cpu_per_host']} per host")
    print("targets:")
    for k, v in results["targets"].items():
        print(f"  {k}: {v}")
    print(f"written: {controller.write(results, 'window-')}")


def round_robin(table: dict, names: list, repeat: int, after=None) -> dict:
    """Each scenario once per round, ``repeat`` rounds: a slow spell of the emulated guest falls on every scenario
    alike, not on one.  ``after()``, after each run, may return a new table (the guest restarted)."""
    runs: dict = {name: [] for name in names}
    for i in range(repeat):
        for name in names:
            lab.log(f"{name} {i + 1}/{repeat}")
            try:
                runs[name].append(table[name]())
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                runs[name].append({"seconds": None, "note": str(exc)[-500:]})
            table = (after() if after else None) or table
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--fleet", default="1,2,4")
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--limit", type=int, default=LIMIT, help="seconds before a run counts as 'did not return'")
    ap.add_argument("--no-lab", action="store_true", help="the controller-side figures only (decode, hostile inputs)")
    ap.add_argument("--window", action="store_true", help="the window of a staged handover (issue 38) alone")
    ap.add_argument("--compare", help="an earlier results JSON, an absolute path: how far each part's median moved (stability)")
    args = ap.parse_args()
    why = "--no-lab was given" if args.no_lab else lab.unavailable()
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
                     "repeat": args.repeat, "limit_seconds": args.limit, **controller.measure(args.repeat)}
    if why:
        print(f"lab scenarios skipped: {why}")
    elif args.window:
        window_main(args, results)
        return
    else:
        started = []
        try:
            ns = lab.command("up", "--name", "bench-1")
            started.append("bench-1")
            up = warm(lab.up(ns))
            results["accel"] = up["guests"][0]["accel"]
            guest, inventory = up["guests"][0], up["inventory"]
            table = scenarios(guest, inventory, args.limit)
            names = [n for n in table if not args.only or n in args.only]
            bound = {"guest": guest}

            def restart():  # a run that did not return: restart the guest; the scenarios are bound to the new one
                if lab.ssh_banner(bound["guest"]["port"], 2):
                    return None
                lab.down(lab.command("down", "--name", "bench-1"))
                again = warm(lab.up(ns))
                bound["guest"] = again["guests"][0]
                return scenarios(bound["guest"], again["inventory"], args.limit)
            runs = round_robin(table, names, args.repeat, restart)
            results["scenarios"] = {
                name: {"seconds": stats([r.get("seconds") for r in rs]),
                       "detect_latency": stats([r.get("detect_latency") for r in rs]),
                       "notes": sorted({r["note"][:200] for r in rs if r.get("note")}),
                       "role_phases": [r["summary"] for r in rs if r.get("summary")][:1],
                       "console": {k: stats([(r.get("console") or {}).get(k) for r in rs])
                                   for k in sorted({k for r in rs for k in (r.get("console") or {})})},
                       "parts": {k: stats([parts(r.get("console") or {})[k] for r in rs]) for k in PARTS},
                       "controller_cpu": stats([r.get("cpu") for r in rs]),
                       "controller_cpu_main": stats([r.get("cpu_main") for r in rs]),
                       "controller_cpu_workers": stats([r.get("cpu_workers") for r in rs]),
                       "kho_kexec_phases": {k: stats([(r.get("phases") or {}).get(k) for r in rs])
                                            for k in sorted({k for r in rs for k in (r.get("phases") or {})})}}
                for name, rs in runs.items()}
            lab.down(lab.command("down", "--name", "bench-1"))
            started.remove("bench-1")
            if not args.only or "fleet" in args.only:
                results["fleet"] = {}
                for n in (int(x) for x in args.fleet.split(",")):
                    fleet = lab.up(lab.command("up", "--name", f"bench-f{n}", "-n", str(n), "--timeout", "300"))
                    started.append(f"bench-f{n}")
                    secs = playbook(fleet["inventory"], "    - ansible.builtin.include_role: {name: kexec.kho.handover}\n",
                                    {"kho_handover_kernel": KERNEL}, limit=600)["seconds"]
                    results["fleet"][str(n)] = round(secs, 2) if secs else None
                    lab.down(lab.command("down", "--name", f"bench-f{n}"))
                    started.remove(f"bench-f{n}")
        finally:
            for name in started:
                lab.down(lab.command("down", "--name", name))
    report(results)
    if args.compare:
        compare(json.loads(Path(args.compare).read_text()), results)


def compare(old: dict, new: dict) -> None:
    """How far each scenario's parts moved between two runs on the same machine (the issue asks within 10%)."""
    print(f"stability against {old['date']}: change of each part's median (ours: before, after; the guest's: boot)")
    for name, s in (new.get("scenarios") or {}).items():
        before = ((old.get("scenarios") or {}).get(name) or {}).get("parts") or {}
        moved = []
        for part, v in (s.get("parts") or {}).items():
            a, b = (before.get(part) or {}).get("median"), v["median"]
            moved.append(f"{part} {a} -> {b} ({(b - a) / a * 100:+.0f}%)" if a and b else f"{part} {a} -> {b}")
        print(f"  {name:24} {'  '.join(moved)}")


def report(results: dict) -> None:
    print(f"\nkexec.kho benchmarks, {results['date']}, {results['machine']}, accel {results.get('accel', '-')}, "
          f"{results['repeat']} runs each (median [min-max] seconds)")
    for name, s in (results.get("scenarios") or {}).items():
        sec, lat = s["seconds"], s["detect_latency"]
        line = f"  {name:24} {sec['median']} [{sec['min']}-{sec['max']}]"
        if lat["n"]:
            line += f"  sshd started to return {lat['median']} [{lat['min']}-{lat['max']}]"
        if sec["missing"]:
            line += f"  ({sec['missing']} did not return: {'; '.join(s['notes'])[:120]})"
        print(line)
    for name, s in (results.get("scenarios") or {}).items():
        parts = "  ".join(f"{k} {v['median']}" for k, v in s.get("console", {}).items() if v["n"])
        if parts:
            print(f"    {name} on the console (median s): {parts}")
        parts = "  ".join(f"{k} {v['median']}" for k, v in s.get("kho_kexec_phases", {}).items() if v["n"])
        if parts:
            print(f"    {name} phases (median s): {parts}")
    controller.print_figures(results)
    sc = results.get("scenarios") or {}
    print("our parts (median s; the guest's boot apart, not ours) and the controller's CPU per handover:")
    for name, s in sc.items():
        p, cpu = s.get("parts") or {}, s.get("controller_cpu") or {}
        main, workers = ((s.get(k) or {}).get("median") for k in ("controller_cpu_main", "controller_cpu_workers"))
        print(f"  {name:24} " + "  ".join(f"{k} {(p.get(k) or {}).get('median')}" for k in PARTS)
              + f"  controller CPU {cpu.get('median')} s (ansible-playbook itself {main}, the host's workers {workers})")
    med = {k: v["seconds"]["median"] for k, v in sc.items()}
    part = {(k, x): ((v.get("parts") or {}).get(x) or {}).get("median") for k, v in sc.items() for x in PARTS}
    lat = {k: v["detect_latency"]["median"] for k, v in sc.items()}
    targets = {
        "role / floor, before the old kernel goes (target <= 2)": ratio(part.get(("role", "before")), part.get(("floor", "before"))),
        "role / floor, sshd to the verdict (target <= 1.5)": ratio(part.get(("role", "after")), part.get(("floor", "after"))),
        "kho_kexec / floor, before the old kernel goes (target <= 1.3)": ratio(part.get(("kho_kexec", "before")),
                                                                               part.get(("floor", "before"))),
        "kho_kexec / floor, sshd to the return (target <= 1.3)": ratio(part.get(("kho_kexec", "after")), part.get(("floor", "after"))),
        "controller CPU-seconds per role handover, ansible-playbook's process tree (target <= 1)": (
            (sc.get("role") or {}).get("controller_cpu") or {}).get("median"),
        "controller CPU-seconds per role handover, the host's workers alone (target <= 1)": (
            (sc.get("role") or {}).get("controller_cpu_workers") or {}).get("median"),
        "kho_kexec, sshd started to return (older target < 0.5 s)": lat.get("kho_kexec"),
        "reboot(systemctl kexec) / kho_kexec, sshd started to return (older target >= 3)":
            ratio(lat.get("reboot_systemctl_kexec"), lat.get("kho_kexec")),
        "kho_kexec / floor (target <= 1.2)": ratio(med.get("kho_kexec"), med.get("floor")),
        "kho_kexec / reboot(kexec -e), same load (target <= 1.0)": ratio(med.get("kho_kexec"), med.get("reboot_kexec_e")),
        "role / kho_kexec (target <= 1.3)": ratio(med.get("role"), med.get("kho_kexec")),
        "role - floor, seconds (target < 5)": round(med["role"] - med["floor"], 2) if med.get("role") and med.get("floor") else None,
        "4 guests / 1 guest (target <= 1.5)": ratio((results.get("fleet") or {}).get("4"), (results.get("fleet") or {}).get("1")),
        **controller.targets(results),
    }
    results["targets"] = targets
    print("targets:")
    for k, v in targets.items():
        print(f"  {k}: {v}")
    print(f"written: {controller.write(results)}")


if __name__ == "__main__":
    if not shutil.which("ansible-playbook", path=f"{BIN}:{os.environ['PATH']}"):
        raise SystemExit("run with the project's virtualenv: .venv/bin/python bench/lab_bench.py (make bench)")
    main()
