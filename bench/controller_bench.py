"""The controller's own benchmarks, no lab: what decoding, verifying and reporting a host costs the controller.

    .venv/bin/python bench/controller_bench.py [--repeat 20]

The decode of a real incoming tree and of a synthetic 1,000-node one, each hostile blob and hostile host of
tests/hostile.py against the per-host budget, the report of 1,000 hosts, and a simulated fleet of 1, 100 and 1,000
hosts (recorded answers, 50 at a time) for the controller's CPU per host.  Prints the figures and writes them as JSON
under bench/results/ (controller-DATE.json); bench/lab_bench.py measures the same beside its lab scenarios.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
if ROOT.parents[1].name == "ansible_collections":  # run from a layout: build/ansible_collections/kexec/kho
    sys.path.insert(0, str(ROOT.parents[2]))


def stats(values: list, digits: int = 2) -> dict:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0, "missing": len(values)}
    return {"median": round(statistics.median(vals), digits), "min": round(min(vals), digits),
            "max": round(max(vals), digits), "n": len(vals), "missing": len(values) - len(vals)}


def decode_cost(repeat: int) -> dict:
    from ansible_collections.kexec.kho.plugins.plugin_utils import _decode  # pylint: disable=import-outside-toplevel
    import fdtbuild  # pylint: disable=import-outside-toplevel
    from simtree import FIXTURES  # pylint: disable=import-outside-toplevel
    shared = FIXTURES / "handover1"
    real = {"fdt": base64.b64encode((shared / "in_fdt").read_bytes()).decode(),
            "sub_blobs": {p.name[len("in_sub_fdts_"):]: base64.b64encode(p.read_bytes()).decode()
                          for p in shared.glob("in_sub_fdts_*")}}
    big = fdtbuild.kho_root(4, {f"blob{i}": (0x1000 * i, 64) for i in range(1000)})
    synthetic = {"fdt": base64.b64encode(big).decode(), "sub_blobs": {}}
    out = {}
    for name, raw in (("real_incoming_tree", real), ("synthetic_1000_nodes", synthetic)):
        times = []
        for _i in range(repeat):
            t = time.perf_counter()
            _decode.decode_side(raw, "in")
            times.append(time.perf_counter() - t)
        out[name] = stats(times, 6)
    return out


def report_cost(hosts: int) -> dict:
    """The report callback's three renderings (screen lines, JSON, HTML) of a synthetic fleet, timed."""
    from ansible_collections.kexec.kho.plugins.plugin_utils import _report  # pylint: disable=import-outside-toplevel
    results = {}
    for i in range(hosts):
        ok = i % 20
        results[f"host-{i:05d}.example.net"] = {
            "verdict": "verified" if ok else "failed, rolled back", "release_before": "7.3.4", "release_after": "7.3.5",
            "kexec_count": 1, "previous_release": "7.3.4", "downtime": 20.0 + i % 7, "failed_step": None if ok else "Load",
            "error": None if ok else "kexec -s -l failed", "boot_phases": {"kernel": 3.1, "userspace": 9.9},
            "timings": {"preflight": 8.0, "load": 6.0, "to_gone": 1.0, "gone_to_banner": 18.0, "banner_to_answer": 1.0, "verify": 4.0},
            "regions": [{"name": f"r{j}", "start_before": 0x3EB00000 + j * 4096, "start_after": 0x3EB00000 + j * 4096,
                         "size": 4096} for j in range(4)]}
    out = {}
    for name, render in (("screen", lambda: "\n".join(_report.summary_line(h, r) for h, r in results.items())),
                         ("json", lambda: json.dumps(results, indent=1, sort_keys=True)),
                         ("html", lambda: _report.render_html(results))):
        t = time.perf_counter()
        text = render()
        out[name] = {"seconds": round(time.perf_counter() - t, 3), "bytes": len(text)}
    out["hosts"], out["total_seconds"] = hosts, round(sum(v["seconds"] for v in out.values()), 3)
    return out


def cost(fn, repeat: int = 3) -> tuple:
    """(fn's result, its median seconds untraced, its peak MiB under tracemalloc in a run of its own)."""
    times = []
    for _i in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    result = None
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, round(statistics.median(times), 3), round(peak / 2**20, 1)


def hostile_inputs() -> dict:
    """Each hostile blob of tests/hostile.py through the controller's decoder: time, peak memory, outcome."""
    from ansible_collections.kexec.kho.plugins.plugin_utils import _decode  # pylint: disable=import-outside-toplevel
    import hostile  # pylint: disable=import-outside-toplevel
    out = {}
    for name, (what, build, expected) in hostile.CASES.items():
        data = build()
        raw = {"fdt": None, "sub_blobs": {"x": base64.b64encode(data).decode()}}
        (_facts, errors), seconds, peak = cost(lambda raw=raw: _decode.decode_side(raw, "in"))
        out[name] = {"input": what, "bytes": len(data), "seconds": seconds, "peak_mib": peak,
                     "result": "refused" if errors else "decoded", "expected": expected,
                     "error": errors[0]["error"] if errors else None}
    return out


def hostile_hosts() -> dict:
    """Each hostile host of tests/hostile.py (all it returned) through facts_from_raw, as kho_facts decodes it:
    time, peak memory, outcome against the per-host budget."""
    from ansible_collections.kexec.kho.plugins.plugin_utils import _decode  # pylint: disable=import-outside-toplevel
    import hostile  # pylint: disable=import-outside-toplevel
    out = {}
    for name, (what, build, expected) in hostile.HOSTS.items():
        raw = build()
        facts, seconds, peak = cost(lambda raw=raw: _decode.facts_from_raw(raw))
        sent = sum(len(v) for side in ("in", "out") for v in (raw.get(side) or {}).get("sub_blobs", {}).values())
        out[name] = {"input": what, "base64_mib": round(sent / 2**20, 1), "seconds": seconds, "peak_mib": peak,
                     "result": "refused" if facts.get("over_budget") else "decoded", "expected": expected,
                     "reason": facts.get("over_budget")}
    return out


def _one_host(recorded: dict, log: list) -> str:  # its verdict
    """The controller's part of one host's handover against recorded answers: the jump's wait loop (old boot, gone,
    back), the decode of the facts before and after, the regions and live update verdicts, the summary line."""
    from ansible_collections.kexec.kho.plugins.filter import kho as filters  # pylint: disable=import-outside-toplevel
    from ansible_collections.kexec.kho.plugins.plugin_utils import _facts_after, _decode, _jump, _report, _verdict  # pylint: disable=import-outside-toplevel
    old, new = "11111111-2222-3333-4444-555555555555", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
    answers = iter([f"{old}\nstarted\nin\n", OSError("gone"), OSError("gone"), f"{new}\nnone\nin\n"])
    clock = [0.0]

    def read():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    _jump.wait_for_new_boot(read, old, 300, 0.25, clock=lambda: clock[0], sleep=lambda s: clock.__setitem__(0, clock[0] + s))
    # Then the new boot's facts, as kho_kexec's facts_after reads them (the role asks for them): one answer, decoded.
    answer = json.dumps({"kho_raw": {**recorded["after"], "log": log, "boot_id": new}, "pstore_found": []})
    before, after = _decode.facts_from_raw(recorded["before"]), _facts_after.decode(answer, new)["facts"]
    taken = filters.kho_regions_verify(before, after, [])
    lu = filters.kho_liveupdate_verify({"device": False}, {"device": False}, "kexec")
    result = _report.normalise({"verdict": _verdict.VERIFIED if not taken["lost"] else _verdict.FAILED_AFTER_JUMP,
                                "downtime": 20.0, "regions": taken["regions"], "liveupdate": lu})
    _report.summary_line("host", result)  # the callback's line, as the run prints it
    return result["verdict"]


def _recorded(fixtures) -> dict:
    """A host's recorded answers, before and after its handover (the repository's fixtures)."""
    def side(directory: str, name: str) -> dict:
        return {"present": True, "fdt": None, "sub_blobs": {
            p.name[len(name) + len("_sub_fdts_"):]: base64.b64encode(p.read_bytes()).decode()
            for p in (fixtures / directory).glob(f"{name}_sub_fdts_*")}}
    return {"before": {"interface": "live", "out": side("cold", "out"), "in": {"present": False}},
            "after": {"interface": "live", "out": side("handover1", "out"), "in": side("handover1", "in")}}


def controller_fleet(sizes=(1, 100, 1000), forks: int = 50) -> dict:
    """The controller's CPU seconds per host handover, for simulated fleets (no guests), forks workers at a time."""
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    import resource  # pylint: disable=import-outside-toplevel
    from simtree import FIXTURES  # pylint: disable=import-outside-toplevel
    from ansible_collections.kexec.kho.plugins.plugin_utils import _verdict  # pylint: disable=import-outside-toplevel

    recorded = _recorded(FIXTURES)
    log = (FIXTURES / "handover1" / "dmesg_kho.txt").read_text().splitlines()
    out = {}
    for n in sizes:
        start = resource.getrusage(resource.RUSAGE_SELF)
        wall = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=forks) as pool:
            verdicts = list(pool.map(lambda _i: _one_host(recorded, log), range(n)))
        end = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
        out[str(n)] = {"hosts": n, "cpu_seconds": round(cpu, 3), "cpu_per_host": round(cpu / n, 4),
                       "wall_seconds": round(time.perf_counter() - wall, 3), "verified": verdicts.count(_verdict.VERIFIED)}
    return out


def staged_fleet(sizes=(100, 1000), batch: int = 50, forks: int = 50) -> dict:
    """Staged mode's controller work, simulated (no guests): every host staged at once (its facts decoded), then
    switched in batches of ``batch``, each host of a batch deciding first whether the rollout goes on from every
    target's result (_verdict.rollout_stopped, as the role's switch does), then its handover's controller part."""
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    import resource  # pylint: disable=import-outside-toplevel
    from simtree import FIXTURES  # pylint: disable=import-outside-toplevel
    from ansible_collections.kexec.kho.plugins.plugin_utils import _decode, _verdict  # pylint: disable=import-outside-toplevel
    recorded = _recorded(FIXTURES)
    log = (FIXTURES / "handover1" / "dmesg_kho.txt").read_text().splitlines()
    out = {}
    for n in sizes:
        start, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=forks) as pool:
            list(pool.map(lambda _i: _decode.facts_from_raw(recorded["before"]), range(n)))  # the stage's read
            results = {f"h{i}": {"verdict": _verdict.STAGED, "failed_step": None} for i in range(n)}
            stopped, verdicts = 0, []
            for first in range(0, n, batch):
                def switch(i):
                    if _verdict.rollout_stopped(results, 0):
                        return None
                    return _one_host(recorded, log)
                got = list(pool.map(switch, range(first, min(first + batch, n))))
                stopped += got.count(None)
                verdicts += got
        end = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (end.ru_utime - start.ru_utime) + (end.ru_stime - start.ru_stime)
        out[str(n)] = {"hosts": n, "batch": batch, "cpu_seconds": round(cpu, 3), "cpu_per_host": round(cpu / n, 4),
                       "wall_seconds": round(time.perf_counter() - wall, 3),
                       "verified": verdicts.count(_verdict.VERIFIED), "stopped": stopped}
    return out


ROLLOUT_PLAYBOOK = """\
- name: every target's result, as the stage leaves it (one failed)
  hosts: all
  gather_facts: false
  tasks:
    - ansible.builtin.set_fact:
        # one expression for the whole dict: ansible-core 2.16 makes a templated null inside a dict the string None
        kho_handover_result: "{{{{ {{'verdict': 'staged', 'failed_step': 'stage' if inventory_hostname == 'h0' else none}} }}}}"
- name: switch
  hosts: all
  serial: {batch}
  gather_facts: false
  tasks:
    - ansible.builtin.set_fact:
        stopped: "{{{{ ansible_play_hosts_all | kexec.kho.kho_rollout_stopped(hostvars, 0) }}}}"
      run_once: {once}
- name: what each host decided
  hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.copy:
        dest: "{{{{ out }}}}"
        content: "{{{{ dict(groups.all | zip(groups.all | map('extract', hostvars, 'stopped'))) | to_json }}}}"
        mode: "0600"
"""


def rollout_decision(sizes=(50, 200), batch: int = 50, timeout: float = 900) -> dict:
    """Staged mode's rollout stop through ansible-playbook and its real hostvars (no guests: ``set_fact`` runs on
    the controller alone): decided by every host, or once per batch (``run_once``, as the role's switch does).
    Each: the CPU of ansible-playbook's process tree per host, and what every host decided."""
    import resource  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import tempfile  # pylint: disable=import-outside-toplevel
    bin_dir = Path(sys.executable).parent
    env = {**__import__("os").environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORKS": "50"}
    if ROOT.parents[1].name == "ansible_collections":
        env["ANSIBLE_COLLECTIONS_PATH"] = str(ROOT.parents[2])
    out = {}
    for n in sizes:
        for once in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                inv, pb, got = Path(tmp) / "hosts.ini", Path(tmp) / "pb.yml", Path(tmp) / "decided.json"
                inv.write_text("".join(f"h{i} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                                       for i in range(n)))
                pb.write_text(ROLLOUT_PLAYBOOK.format(batch=batch, once=str(once).lower()))
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                proc = subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(inv), str(pb), "-e",
                                       json.dumps({"out": str(got)})], capture_output=True, text=True, env=env,
                                      timeout=timeout, check=False)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                if proc.returncode:
                    raise RuntimeError(proc.stdout[-2000:])
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                out[f"{n} hosts, {'once per batch' if once else 'every host'}"] = {
                    "hosts": n, "batch": batch, "once_per_batch": once, "cpu_seconds": round(cpu, 2),
                    "cpu_per_host": round(cpu / n, 4), "decided": json.loads(got.read_text())}
    return out


def ratio(a, b):
    return round(a / b, 2) if a and b else None


def measure(repeat: int) -> dict:
    """Every controller figure, in one dict (the keys of the results JSON)."""
    return {"decode": decode_cost(max(repeat, 20)), "report": report_cost(1000), "hostile": hostile_inputs(),
            "hostile_hosts": hostile_hosts(), "controller_fleet": controller_fleet(), "staged_fleet": staged_fleet()}


def print_figures(results: dict) -> None:
    rep = results["report"]
    print(f"  report of {rep['hosts']} hosts: screen {rep['screen']['seconds']} s, JSON {rep['json']['seconds']} s, "
          f"HTML {rep['html']['seconds']} s ({rep['html']['bytes'] / 2**20:.1f} MiB); total {rep['total_seconds']} s")
    for name, s in results["decode"].items():
        print(f"  decode {name:17} {s['median'] * 1000:.1f} ms [{s['min'] * 1000:.1f}-{s['max'] * 1000:.1f}]")
    print("hostile hosts (all one host returned, through facts_from_raw; budget per host: < 1 s and < 64 MiB):")
    for name, h in results["hostile_hosts"].items():
        print(f"  {name:18} {h['base64_mib']:6.1f} MiB sent  {h['seconds']:6.3f} s  peak {h['peak_mib']:5.1f} MiB  "
              f"{h['result']}{'' if h['result'] == h['expected'] else ' (EXPECTED ' + h['expected'] + ')'}")
    print("the controller's own work per host (simulated fleet, recorded answers, 50 at a time; target <= 1 CPU-second):")
    for n, f in results["controller_fleet"].items():
        print(f"  {n:>5} hosts  {f['cpu_seconds']:8.3f} CPU-s  {f['cpu_per_host']:.4f} per host  wall {f['wall_seconds']} s  "
              f"verified {f['verified']}")
    for n, f in (results.get("staged_fleet") or {}).items():
        print(f"  staged, {n:>5} hosts, switched {f['batch']} at a time  {f['cpu_seconds']:8.3f} CPU-s  "
              f"{f['cpu_per_host']:.4f} per host  verified {f['verified']}")
    print("hostile inputs (controller decode; target: each refused or decoded in < 1 s and < 100 MB):")
    for name, h in results["hostile"].items():
        print(f"  {name:16} {h['bytes'] / 2**20:6.2f} MiB  {h['seconds']:6.3f} s  peak {h['peak_mib']:6.1f} MiB  "
              f"{h['result']}{'' if h['result'] == h['expected'] else ' (EXPECTED ' + h['expected'] + ')'}")


def targets(results: dict) -> dict:
    """The controller's targets: each figure beside the bound it is held to."""
    fleet = results["controller_fleet"]
    return {
        "1000-host report, seconds (target < 2)": results["report"]["total_seconds"],
        "synthetic 1000-node decode, seconds (target < 0.5)": results["decode"]["synthetic_1000_nodes"]["median"],
        "slowest hostile input, seconds (target < 1)": max(h["seconds"] for h in results["hostile"].values()),
        "largest hostile peak, MiB (target < 100)": max(h["peak_mib"] for h in results["hostile"].values()),
        "slowest hostile host, seconds (target < 1)": max(h["seconds"] for h in results["hostile_hosts"].values()),
        "largest hostile host peak, MiB (target < 64)": max(h["peak_mib"] for h in results["hostile_hosts"].values()),
        "controller CPU-seconds per host, 1000 simulated hosts (target <= 1)": fleet["1000"]["cpu_per_host"],
        "controller CPU per host, 1000 hosts / 100 hosts (linear growth: near 1)": ratio(
            fleet["1000"]["cpu_per_host"], fleet["100"]["cpu_per_host"]),
        **({"staged: controller CPU-seconds per host, 1000 simulated hosts in batches of 50 (target <= 0.5)":
            results["staged_fleet"]["1000"]["cpu_per_host"],
            "staged: CPU per host, 1000 hosts / 100 hosts (linear: near 1)": ratio(
                results["staged_fleet"]["1000"]["cpu_per_host"], results["staged_fleet"]["100"]["cpu_per_host"])}
           if "1000" in (results.get("staged_fleet") or {}) and "100" in results["staged_fleet"] else {}),
    }


def write(results: dict, prefix: str = "") -> Path:
    """The results JSON under bench/results/, named by the date (and the bench, with a prefix)."""
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{prefix}{time.strftime('%Y-%m-%d-%H%M')}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "repeat": args.repeat, **measure(args.repeat)}
    print(f"kexec.kho controller benchmarks, {results['date']}")
    print_figures(results)
    results["targets"] = targets(results)
    print("targets:")
    for k, v in results["targets"].items():
        print(f"  {k}: {v}")
    print(f"written: {write(results, 'controller-')}")


if __name__ == "__main__":
    main()
