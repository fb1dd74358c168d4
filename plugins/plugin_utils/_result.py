# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_handover_result, built once from the handover role's facts and typed by _report.normalise.  Not a public API.

The role's summary.yml hands its facts over as they are (the filter kho_handover_result); every field is decided
here, in Python, from those facts only.  The fields and their types: _report (STRINGS, FLOATS, PLAN, ...) and
docs/report.md.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.kexec.kho.plugins.plugin_utils import _report

# The role's facts the record reads (summary.yml passes each, {} or None where the run never set it).
FACTS = ("host", "verdict", "failed_step", "error", "before", "after", "jump", "preflight", "check", "read", "times",
         "way_back", "earlier_return", "check_mode", "settings")


def _map(value) -> dict:
    return dict(value) if isinstance(value, Mapping) else {}


def _flag(value) -> bool:
    """A setting as a bool: Ansible's words for true (ansible-core 2.16 renders a leaf as text); anything else, a list
    or a mapping too, is false."""
    return isinstance(value, (bool, int, float, str)) and boolean(value, strict=False)


def _list(value) -> list:
    return list(value) if isinstance(value, list) else []


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _span(times: dict, start: str, end: str, now: float | None = None) -> float | None:
    """Seconds from the role's clock mark ``start`` to ``end`` (``now`` where ``end`` was not reached)."""
    a, b = _float(times.get(start)), _float(times.get(end)) if end in times else now
    return round(b - a, 2) if a is not None and b is not None else None


def plan(f: dict) -> dict:
    """What the run would do (the dry run's plan): the load as resolved, else as preflight saw it."""
    before, settings = _map(f.get("before")), _map(f.get("settings"))
    load = _map(_map(f.get("jump")).get("load")) or _map(f.get("preflight"))
    return {"kernel": load.get("kernel", settings.get("kernel")), "initrd": load.get("initrd", settings.get("initrd")) or None,
            "cmdline": load.get("cmdline"), "argv": load.get("argv"),
            "method": load.get("method", settings.get("method")),  # as the load resolved it (auto: what keeps LUO state)
            "finalize": before.get("interface") == "finalize" and _flag(settings.get("finalize")),
            "enable_and_reboot_first": not before.get("enabled", True),
            "lock": _map(_map(f.get("read")).get("lock")).get("path"), "canary": _flag(settings.get("canary")),
            "regions": [r.get("name") for r in _list(_map(before.get("out")).get("reserve_mem")) if isinstance(r, Mapping)],
            "target": load.get("target")}  # what the target kernel reads of what is handed over


def where_now(f: dict) -> tuple:
    """(release, boot id) after the run: a host the way back took home is on its old kernel again (way_back names
    the failed one: failed_release, and back.boot_id_after is the boot it came home on)."""
    ret, jump = _map(f.get("way_back")), _map(f.get("jump"))
    home = bool(ret.get("returned"))
    release = ret.get("returned_to") if home else _map(f.get("after")).get("release")
    back = _map(ret.get("back")).get("boot_id_after")
    return release, back if home and back else jump.get("boot_id_after")


def timings(f: dict, now: float) -> dict:
    t, jump = _map(f.get("times")), _map(f.get("jump"))
    ph = _map(jump.get("phases"))
    return {"preflight": _span(t, "start", "load") if "load" in t else None, "jump": jump.get("elapsed"),
            # the jump split, in kho_kexec's own phase names: the run that loads and queues it, then the wait
            **{k: ph.get(k) for k in ("load", "to_gone", "gone_to_banner", "banner_to_answer", "to_answer")},
            "verify": _span(t, "verify", "end") if "end" in t and "verify" in t else None,
            "total": _span(t, "start", "end", now) if "start" in t else None}


def record(facts, now: float) -> dict:
    """kho_handover_result from the role's facts (FACTS), typed; ``now`` closes a run whose clock never stopped."""
    f = _map(facts)
    before, after, jump, check = (_map(f.get(k)) for k in ("before", "after", "jump", "check"))
    target = _map(_map(plan(f).get("target")))
    meta = _map(_map(after.get("in")).get("kexec_metadata"))
    release_after, boot_id_after = where_now(f)
    systemd = _map(_map(after.get("liveupdate")).get("systemd"))
    return _report.normalise({
        "host": f.get("host"), "verdict": f.get("verdict"), "failed_step": f.get("failed_step"),
        "error": f.get("error"), "release_before": before.get("release"), "release_after": release_after,
        "target_release": target.get("target_release"), "target_support": target.get("status"),
        "boot_id_before": before.get("boot_id"), "boot_id_after": boot_id_after,
        "regions": _list(check.get("regions")), "kexec_count": meta.get("kexec_count"),
        "previous_release": meta.get("previous_release"), "downtime": jump.get("downtime"),
        "detection": jump.get("detection"), "method": jump.get("method"), "liveupdate": check.get("liveupdate"),
        # staged mode: the switch took up the stage's load (true), or loaded again (false); null without a switch
        "switched_from_stage": _map(jump.get("load")).get("reused_staged"),
        "switched_by": _map(jump.get("load")).get("switched_by"),  # "shell": one shell command, no module run
        # systemd-analyze's phases of the new boot (systemd 262 counts the old boot's stopping, exit and shutdown)
        "boot_phases": systemd.get("boot_phases"), "detect_latency": jump.get("detect_latency"),
        # the way back, where the new kernel failed a check (return.yml): the decision, the verdict, both halves'
        "way_back": f.get("way_back") or None,
        "earlier_return": f.get("earlier_return"),  # a return the host made by itself in an earlier run
        "plan": plan(f) if _flag(f.get("check_mode")) else None,  # a dry run says what it would do
        "timings": timings(f, now),
    })
