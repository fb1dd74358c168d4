# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The handover summary: one data shape, a line of text, and one self-contained HTML page.  Not a public API.

``normalise`` gives a result the same types whatever the controller: ansible-core 2.16 templates
``"1.28"`` and ``""`` where 2.19 and later give ``1.28`` and ``null``.  Every renderer is total: a result
is remote data, and any JSON value where a number or a list was expected renders as text instead of raising.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from collections.abc import Mapping

from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump, _verdict

# The timeline's bars, in kho_kexec's own phase names (_jump.WAIT_PHASES): the jump split where kho_kexec timed
# its parts, else as one bar; to_answer stands for the wait where it was not watched in parts (no banner check).
PHASES = (("preflight", "#6c8ebf"), ("load", "#b85450"), ("to_gone", "#f0a30a"), ("gone_to_banner", "#d79b00"),
          ("banner_to_answer", "#9673a6"), ("to_answer", "#d79b00"), ("jump", "#d79b00"), ("verify", "#82b366"))
SPLIT = ("load", *_jump.WAIT_PHASES)
DOWNTIME_BAR = ("jump", "gone_to_banner", "to_answer")  # the bar that carries the downtime in its label
DOWNTIME_COLOUR = "#c62828"
UNKNOWN = "unknown"

# The documented fields of kho_handover_result (and what the callback adds: batch, started_at, finished_at).
STRINGS = ("host", "verdict", "failed_step", "error", "release_before", "release_after", "target_release",
           "target_support", "boot_id_before", "boot_id_after", "previous_release", "detection", "method", "switched_by")
FLOATS = ("downtime", "detect_latency", "started_at", "finished_at")
INTS = ("kexec_count", "batch")
BOOLS = ("switched_from_stage",)  # staged mode: the switch took up the stage's load (false: it loaded again)
TIMINGS = ("preflight", "load", *_jump.WAIT_PHASES, "jump", "verify", "total")
LIVEUPDATE = {"method": "str", "expected_number": "int", "incoming_number": "int", "kexec_count_before": "int",
              "kexec_count_after": "int", "sessions_before": "strs", "units_before": "strs", "lost": "strs"}
REGION = {"name": "str", "size": "int", "start_before": "int", "start_after": "int", "revived": "bool",
          "ramoops": "bool"}
WAY_BACK = {"verdict": "str", "returned": "bool", "failed_check": "str", "failed_release": "str", "failure": "str",
            "decision": "str", "returned_to": "str", "by_host": "bool"}  # _return.outcome's, "return", "back" as data
NOTE = {"run_id": "str", "old_boot_id": "str", "new_boot_id": "str", "old_release": "str", "new_release": "str",
        "timeout": "int", "state": "str"}  # self_return.parse_note's: a return the host made by itself in a run before
PLAN = {"kernel": "str", "initrd": "str", "cmdline": "str", "argv": "strs", "method": "str", "finalize": "bool",
        "enable_and_reboot_first": "bool", "lock": "str", "canary": "bool", "regions": "strs"}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_NULLS = ("", "none", "null")  # how a null reaches us through ansible-core 2.16's string templating


def _is_null(value) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NULLS)


def _num(value) -> float | None:
    if isinstance(value, bool) or _is_null(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _int(value) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and not _is_null(value):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    number = _num(value)
    return int(number) if number is not None and number.is_integer() else None


def _bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return {"true": True, "yes": True, "false": False, "no": False}.get(value.strip().lower())
    return None


def _str(value) -> str | None:
    if _is_null(value):
        return None
    if isinstance(value, str):
        return str.__str__(value)  # a plain str, not ansible-core's tagged or unsafe text
    if isinstance(value, (dict, list)):
        return json.dumps(_data(value), sort_keys=True)
    return str(value)


def _strs(value) -> list:
    return [s for s in (_str(v) for v in value) if s is not None] if isinstance(value, (list, tuple)) else []


_KIND = {"str": _str, "int": _int, "bool": _bool, "strs": _strs}


def _data(value):
    """Any other value as plain JSON data, a 2.16 null ('' or 'None') as None."""
    if isinstance(value, Mapping):
        return {str.__str__(str(k)): _data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_data(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return None if _is_null(value) else str.__str__(value)
    return value if value is None or isinstance(value, (bool, int)) else str(value)


def _record(value, schema: dict) -> dict | None:
    if not isinstance(value, Mapping):
        return None
    out = {str(k): _data(v) for k, v in value.items() if str(k) not in schema}
    out.update({key: _KIND[kind](value.get(key)) for key, kind in schema.items()})
    return out


def normalise(result) -> dict:
    """A result with every documented field, each of its documented type or None; other fields as plain data.

    Idempotent and total: any JSON in, the same shape out.
    """
    r = result if isinstance(result, Mapping) else {}
    out = {str(k): _data(v) for k, v in r.items()}
    out.update({k: _str(r.get(k)) for k in STRINGS})
    out.update({k: _num(r.get(k)) for k in FLOATS})
    out.update({k: _int(r.get(k)) for k in INTS})
    out.update({k: _bool(r.get(k)) for k in BOOLS})
    timings = r.get("timings") if isinstance(r.get("timings"), Mapping) else {}
    out["timings"] = {**{str(k): _num(v) for k, v in timings.items()}, **{k: _num(timings.get(k)) for k in TIMINGS}}
    regions = r.get("regions") if isinstance(r.get("regions"), list) else []
    out["regions"] = [_record(g, REGION) for g in regions if isinstance(g, Mapping)]
    out["liveupdate"] = _record(r.get("liveupdate"), LIVEUPDATE)
    out["plan"] = _record(r.get("plan"), PLAN)
    out["way_back"] = _record(r.get("way_back"), WAY_BACK)
    out["earlier_return"] = _record(r.get("earlier_return"), NOTE)
    phases = r.get("boot_phases")
    out["boot_phases"] = {str(k): _num(v) for k, v in phases.items()} if isinstance(phases, Mapping) else None
    return out


def _text(value) -> str:
    return UNKNOWN if value is None else str(value)


RELEASE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~:@-]{0,127}")


def _release(value) -> str:
    """A kernel release as the line shows it: as it is where it is one word a kernel writes, else quoted (a hostile
    host's text never reads as the line's own punctuation)."""
    if value is None:
        return UNKNOWN
    return str(value) if RELEASE_WORD.fullmatch(str(value)) else json.dumps(str(value))


def _seconds(value) -> str:
    return UNKNOWN if value is None else f"{round(value, 2)} s"


def _hex(value) -> str:
    return UNKNOWN if value is None else f"0x{value:x}"


def _region(g: dict) -> str:
    """A region as sent and as received; one the new kernel did not take up says so (received is not kept)."""
    after = _hex(g["start_after"]) if g["start_after"] is not None else "missing"
    kept = " (not taken up by the new kernel)" if g.get("revived") is False else ""
    return f"{_text(g['name'])} {_hex(g['start_before'])} -> {after}{kept}"


def plain(text: str) -> str:
    """Text for a terminal: control characters (escape sequences included) shown as \\xNN, never sent."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def live_update(r: dict) -> str:
    """The live update part of a normalised result: the method, the liveupdate number, what was preserved and lost."""
    lu = r["liveupdate"]
    if not lu:
        return ""
    kept = lu["sessions_before"] + lu["units_before"]
    return (f"live update by {_text(lu['method'])}: number {_text(lu['incoming_number'])} (expected "
            f"{_text(lu['expected_number'])}), preserved {', '.join(kept) or 'nothing'}"
            + (f", LOST {'; '.join(lu['lost'])}" if lu["lost"] else ""))


def boot_phases(r: dict) -> str:
    """systemd's own phases of the jump and the new boot ('stopping 3.8 s + exit 0.3 s + ...'), or ''."""
    return " + ".join(f"{name} {v:.1f} s" if v is not None else f"{name} {UNKNOWN}"
                      for name, v in (r["boot_phases"] or {}).items())


def timeline(r: dict) -> str:
    """The timed phases in order ('preflight 8.0 s, load 6.0 s, to gone 1.0 s, gone to banner 18.0 s, ...'), or ''."""
    return ", ".join(f"{phase.replace('_', ' ')} {seconds:.1f} s" for phase, seconds, _c in _bars(r))


def summary_line(host, r) -> str:
    """One line per host: verdict, where it failed, kernels, kexec count, downtime and phases, regions, live update.

    What is not known says ``unknown``; the same line whatever the controller's ansible-core.
    """
    r = normalise(r)
    failed = (f" at '{r['failed_step']}'" + (f": {r['error']}" if r["error"] else "")) if r["failed_step"] else ""
    previous = f" (previous release {_release(r['previous_release'])})" if r["previous_release"] else ""
    regions = ", ".join(_region(g) for g in r["regions"])
    lu, phases, times = live_update(r), boot_phases(r), timeline(r)
    return plain(f"{_text(_str(host))}: {_text(r['verdict'])}{failed}; "
                 f"{_release(r['release_before'])} -> {_release(r['release_after'])}{previous}, "
                 f"kexec count {_text(r['kexec_count'])}, downtime {_seconds(r['downtime'])}"
                 + (f" ({times})" if times else "") + "; "
                 f"{regions or 'no reserve_mem regions'}" + (f"; {lu}" if lu else "")
                 + (f"; systemd: {phases}" if phases else ""))


def write_private(path: str, text: str) -> None:
    """Written atomically (files.write_atomic), mode 0600 or stricter if the umask is."""
    umask = os.umask(0o077)
    os.umask(umask)
    files.write_atomic(path, text.encode("utf-8"), mode=0o600 & ~umask, dir_mode=0o700)


def _bars(r: dict) -> list:
    """(phase, seconds, colour) of a normalised result: the jump split where it was timed in parts."""
    timings = r["timings"]
    split = timings["load"] is not None
    parts = timings["gone_to_banner"] is not None  # else the wait is one bar, to_answer
    return [(phase, timings[phase], colour) for phase, colour in PHASES
            if timings[phase] is not None and timings[phase] >= 0
            and not (phase == "jump" and split) and not (phase in SPLIT and not split)
            and not (phase == "to_answer" and parts)]


def fleet(results: dict) -> tuple:
    """Each host's row on one time axis, batch by batch, and the axis' length in seconds.

    A row is (batch, host, offset, bars, result) with bars as (phase, start, seconds, colour).  Where the
    callback recorded when every host started, the axis is the run's clock; otherwise a batch starts where
    the longest host of the batch before it ended.
    """
    return _fleet({str(h): normalise(r) for h, r in (results.items() if isinstance(results, Mapping) else ())})


def _fleet(results: dict) -> tuple:
    def length(r):
        return max(sum(s for _p, s, _c in _bars(r)), r["timings"]["total"] or 0.0)

    order = sorted(results, key=lambda h: (results[h]["batch"] is None, results[h]["batch"] or 0,
                                           results[h]["started_at"] or 0.0, h))
    starts = [r["started_at"] for r in results.values()]
    clock = bool(starts) and None not in starts and max(starts) - min(starts) < 1e7  # a run of months is no clock
    t0 = min(starts) if clock else 0.0
    batch_start, batch_end, previous = 0.0, 0.0, object()
    rows = []
    for host in order:
        r = results[host]
        if r["batch"] != previous:
            batch_start, previous = batch_end, r["batch"]
        offset = r["started_at"] - t0 if clock else batch_start
        at, bars = offset, []
        for phase, seconds, colour in _bars(r):
            bars.append((phase, at, seconds, colour))
            at += seconds
        batch_end = max(batch_end, offset + length(r))
        rows.append((r["batch"], host, offset, bars, r))
    return rows, max([offset + length(r) for _b, _h, offset, _bars_, r in rows] + [1.0])


def _tick_step(axis: float) -> float:
    return next((s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600) if axis / s <= 10),
                3600 * math.ceil(axis / 36000))


def _fleet_html(results: dict) -> str:
    rows, axis = _fleet(results)
    axis = axis if math.isfinite(axis) else 1.0  # phases summed past a float's range: drawn off the axis, no raise
    step = _tick_step(axis)
    grid = (f"background-image:linear-gradient(to right,#ccc 1px,transparent 1px);"
            f"background-size:{100 * step / axis:.3f}% 100%")
    ticks = "".join(f'<span class="tick" style="left:{100 * i * step / axis:.3f}%">{i * step:g} s</span>'
                    for i in range(int(axis // step) + 1))
    out = [f'<section class="fleet"><h2>Fleet timeline</h2><div class="row axis"><span class="name"></span>'
           f'<div class="track">{ticks}</div><span class="down">downtime</span></div>']
    batches: dict = {}
    for row in rows:
        batches.setdefault(row[0], []).append(row)
    for n, (batch, mine) in enumerate(batches.items()):
        title = "hosts without a recorded batch" if batch is None else f"batch {n + 1}"
        out.append(f'<div class="batch b{n % 2}"><div class="batch-title">{title}: {len(mine)} '
                   f'host{"s" if len(mine) != 1 else ""}</div>')
        for _b, host, offset, bars, r in mine:
            verdict = _text(r["verdict"])
            spans = [f'<div class="span {phase}" style="left:{100 * start / axis:.3f}%;width:{100 * sec / axis:.3f}%;'
                     f'background:{colour}" title="{html.escape(f"{phase} {sec:.1f} s")}"></div>'
                     for phase, start, sec, colour in bars]
            if r["downtime"] is not None and bars:
                end = max(start + sec for _p, start, sec, _c in bars)
                spans.append(f'<div class="downtime" style="left:{100 * max(offset, end - r["downtime"]) / axis:.3f}%;'
                             f'width:{100 * min(r["downtime"], end - offset) / axis:.3f}%" '
                             f'title="downtime {r["downtime"]:.1f} s"></div>')
            out.append(f'<div class="row"><span class="name"><a href="#host-{html.escape(host)}">{html.escape(host)}</a> '
                       f'<span class="verdict {"ok" if _verdict.ok(verdict) else "bad"}">{html.escape(verdict)}</span>'
                       f'</span><div class="track" style="{grid}">{"".join(spans)}</div>'
                       f'<span class="down">{_seconds(r["downtime"])}</span></div>')
        out.append("</div>")
    return "".join(out) + "</section>"


def _host_section(host: str, r: dict, scale: float, batch) -> str:
    bars = []
    for phase, seconds, colour in _bars(r):
        label = f"{phase.replace('_', ' ')} {seconds:.1f} s"
        if phase in DOWNTIME_BAR and r["downtime"] is not None:
            label += f" (downtime {r['downtime']:.1f} s)"
        bars.append(f'<div class="bar {phase}" style="width:{100 * seconds / scale:.2f}%;background:{colour}" '
                    f'title="{html.escape(label)}">{html.escape(label)}</div>')
    verdict = _text(r["verdict"])
    regions = "".join(f"<li>{html.escape(_region(g))} ({html.escape(_text(g['size']))} bytes)</li>" for g in r["regions"])
    lu, phases = live_update(r), boot_phases(r)
    error = (f'<p class="error">failed at {html.escape(r["failed_step"])}: '
             f'{html.escape(_text(r["error"]))}</p>') if r["failed_step"] else ""
    facts = ([f"batch {batch}"] if batch is not None else []) + (
        [f"downtime {r['downtime']:.1f} s"] if r["downtime"] is not None else [])
    return (f'<section class="host" id="host-{html.escape(host)}"><details{"" if _verdict.ok(verdict) else " open"}>'
            f'<summary>{html.escape(host)} <span class="verdict {"ok" if _verdict.ok(verdict) else "bad"}">'
            f'{html.escape(verdict)}</span> {html.escape(", ".join(facts))}</summary>'
            f'<div class="timeline">{"".join(bars) or "<em>no phase timed</em>"}</div>'
            f'<p>{html.escape(_text(r["release_before"]))} &rarr; {html.escape(_text(r["release_after"]))}, '
            f'previous release {html.escape(_text(r["previous_release"]))}, '
            f'kexec count {html.escape(_text(r["kexec_count"]))}</p><ul>{regions}</ul>'
            + (f'<p class="liveupdate">{html.escape(lu)}</p>' if lu else "")
            + (f'<p class="phases">systemd: {html.escape(phases)}</p>' if phases else "")
            + f'{error}</details></section>')


# The page's style sheet: plain CSS, no external resource.
STYLE = f"""\
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
summary h2 {{ display: inline; font-size: 1.2em; }} section.host summary {{ font-weight: bold; margin: 0.4em 0; }}
.timeline {{ display: flex; width: 100%; background: #eee; border-radius: 4px; overflow: hidden; min-height: 1.6em; }}
.bar {{ color: #fff; font-size: 0.8em; padding: 0.3em; white-space: nowrap; overflow: hidden; }}
.verdict {{ font-size: 0.8em; padding: 0.1em 0.4em; border-radius: 3px; color: #fff; }}
.ok {{ background: #2e7d32; }} .bad {{ background: {DOWNTIME_COLOUR}; }} .error {{ color: {DOWNTIME_COLOUR}; }}
.legend span {{ display: inline-block; padding: 0.2em 0.6em; margin-right: 0.5em; color: #fff; }}
.legend span.down {{ background: {DOWNTIME_COLOUR}; }}
.fleet {{ margin-bottom: 2em; }} .fleet h2 {{ font-size: 1.2em; }}
.fleet .row {{ display: flex; align-items: center; margin: 0.25em 0; }}
.fleet .name {{ width: 16em; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-size: 0.9em; }}
.fleet .down {{ width: 7em; flex: none; text-align: right; font-size: 0.9em; }}
.fleet .track {{ position: relative; flex: 1; height: 1.3em; background-color: #eee; }}
.fleet .axis {{ padding: 0 0.4em; border-left: 4px solid transparent; }} .fleet .axis .track {{ background: none; height: 1.2em; }}
.tick {{ position: absolute; font-size: 0.75em; border-left: 1px solid #999; padding-left: 2px; white-space: nowrap; }}
.span {{ position: absolute; top: 0; bottom: 0; }}
.downtime {{ position: absolute; bottom: -5px; height: 4px; background: {DOWNTIME_COLOUR}; }}
.batch {{ padding: 0.2em 0.4em 0.5em; border-left: 4px solid #6c8ebf; margin: 0.3em 0; }}
.batch.b0 {{ background: #f3f6fb; }} .batch.b1 {{ background: #fbf6ec; border-left-color: #d79b00; }}
.batch-title {{ font-size: 0.85em; font-weight: bold; color: #555; }}
"""


def render_html(results) -> str:
    """The fleet on one time axis (batch by batch, downtime per host), then each host grouped by verdict
    (failures first, open; verified ones folded), with its own timeline.

    Plain HTML and CSS (details/summary to fold): no script, no external resource.
    """
    results = {str(host): normalise(r) for host, r in (results.items() if isinstance(results, Mapping) else ())}
    labels = {b: n + 1 for n, b in enumerate(sorted({r["batch"] for r in results.values() if r["batch"] is not None}))}
    scale = max([sum(seconds for _p, seconds, _c in _bars(r)) for r in results.values()] + [1.0])
    groups: dict = {}
    for host in sorted(results):
        groups.setdefault(_text(results[host]["verdict"]), []).append(host)
    sections = []
    for verdict in sorted(groups, key=lambda v: (_verdict.ok(v), v)):
        hosts = groups[verdict]
        sections.append(f'<details class="group"{"" if _verdict.ok(verdict) else " open"}><summary><h2>'
                        f'{html.escape(verdict)}: {len(hosts)} host{"s" if len(hosts) != 1 else ""}</h2></summary>'
                        + "".join(_host_section(h, results[h], scale, labels.get(results[h]["batch"])) for h in hosts) + "</details>")
    verified = len(groups.get(_verdict.VERIFIED, []))
    legend = "".join(f'<span style="background:{c}">{p.replace("_", " ")}</span>' for p, c in PHASES if p not in ("jump", "to_answer"))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>KHO handover report</title>
<style>
{STYLE}</style></head><body>
<h1>KHO handover report</h1>
<p>{verified} of {len(results)} hosts verified.</p>
<p class="legend">{legend}<span class="down">downtime</span></p>
{_fleet_html(results)}
{"".join(sections)}
</body></html>
"""
