# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The handover summary as a line of text and as one self-contained HTML page.  Not a public API.

Every renderer is total: a result is remote data, and any JSON value where a number or a list
was expected renders as text instead of raising.
"""

from __future__ import annotations

import html
import math
import os
import re
import tempfile

# The timeline's bars: the jump split where kho_kexec timed its parts, else as one bar.
PHASES = (("preflight", "#6c8ebf"), ("load", "#b85450"), ("jump_to_banner", "#d79b00"),
          ("banner_to_answer", "#9673a6"), ("jump", "#d79b00"), ("verify", "#82b366"))
SPLIT = ("load", "jump_to_banner", "banner_to_answer")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _num(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _hex(value) -> str:
    try:
        return f"0x{int(value):x}"
    except (TypeError, ValueError, OverflowError):
        return str(value)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _regions(r: dict) -> list:
    regions = r.get("regions")
    return [g for g in regions if isinstance(g, dict)] if isinstance(regions, list) else []


def _region(g: dict) -> str:
    after = _hex(g.get("start_after")) if g.get("start_after") not in (None, "None") else "missing"
    return f"{g.get('name')} {_hex(g.get('start_before'))} -> {after}"


def _failed(r: dict) -> bool:
    """ansible-core 2.16 (no native types) renders a null failed_step as '' or 'None'."""
    return r.get("failed_step") not in (None, "None", "")


def plain(text: str) -> str:
    """Text for a terminal: control characters (escape sequences included) shown as \\xNN, never sent."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def live_update(r: dict) -> str:
    """The live update part of a result: the method, the liveupdate number, what was preserved, what was lost."""
    lu = _dict(r.get("liveupdate"))
    if not lu:
        return ""
    kept = [str(x) for x in _list(lu.get("sessions_before")) + _list(lu.get("units_before"))]
    lost = _list(lu.get("lost"))
    return (f"live update by {lu.get('method')}: number {lu.get('incoming_number')} (expected "
            f"{lu.get('expected_number')}), preserved {', '.join(kept) or 'nothing'}"
            + (f", LOST {'; '.join(str(x) for x in lost)}" if lost else ""))


def boot_phases(r: dict) -> str:
    """systemd's own phases of the jump and the new boot ('stopping 3.8 s + exit 0.3 s + ...'), or ''."""
    phases = _dict(r.get("boot_phases"))
    return " + ".join(f"{name} {_num(v):.1f} s" if _num(v) is not None else f"{name} {v}"
                      for name, v in phases.items())


def timeline(r: dict) -> str:
    """The timed phases in order ('preflight 8.0 s, load 6.0 s, jump to banner 19.0 s, ...'), or ''."""
    return ", ".join(f"{phase.replace('_', ' ')} {seconds:.1f} s" for phase, seconds, _c in _bars(r))


def summary_line(host: str, r) -> str:
    r = _dict(r)
    regions = ", ".join(_region(g) for g in _regions(r))
    failed = f" at '{r.get('failed_step')}': {r.get('error')}" if _failed(r) else ""
    lu, phases, times = live_update(r), boot_phases(r), timeline(r)
    return plain(f"{host}: {r.get('verdict')}{failed}; {r.get('release_before')} -> {r.get('release_after')}, "
                 f"kexec count {r.get('kexec_count')}, downtime {r.get('downtime')} s"
                 + (f" ({times})" if times else "") + "; "
                 f"{regions or 'no reserve_mem regions'}" + (f"; {lu}" if lu else "")
                 + (f"; systemd: {phases}" if phases else ""))


def write_private(path: str, text: str) -> None:
    """Written atomically (temporary file beside it, renamed), mode 0600 or stricter if the umask is."""
    umask = os.umask(0o077)
    os.umask(umask)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _bars(r: dict) -> list:
    """(phase, seconds, colour) of a host's timeline: the jump split where it was timed in parts."""
    timings = _dict(r.get("timings"))
    split = _num(timings.get("load")) is not None
    out = []
    for phase, colour in PHASES:
        seconds = _num(timings.get(phase))
        if seconds is None or seconds < 0 or (phase == "jump" and split) or (phase in SPLIT and not split):
            continue
        out.append((phase, seconds, colour))
    return out


def _host_section(host: str, r: dict, scale: float) -> str:
    bars = []
    for phase, seconds, colour in _bars(r):
        label = f"{phase.replace('_', ' ')} {seconds:.1f} s"
        if phase in ("jump", "jump_to_banner") and _num(r.get("downtime")) is not None:
            label += f" (downtime {_num(r['downtime']):.1f} s)"
        bars.append(f'<div class="bar {phase}" style="width:{100 * seconds / scale:.2f}%;background:{colour}" '
                    f'title="{html.escape(label)}">{html.escape(label)}</div>')
    verdict = str(r.get("verdict"))
    regions = "".join(f"<li>{html.escape(_region(g))} ({html.escape(str(g.get('size')))} bytes)</li>"
                      for g in _regions(r))
    lu, phases = live_update(r), boot_phases(r)
    error = (f'<p class="error">failed at {html.escape(str(r.get("failed_step")))}: '
             f'{html.escape(str(r.get("error")))}</p>') if _failed(r) else ""
    downtime = _num(r.get("downtime"))
    return (f'<section class="host" id="host-{html.escape(host)}"><details{"" if verdict == "verified" else " open"}>'
            f'<summary>{html.escape(host)} <span class="verdict {"ok" if verdict == "verified" else "bad"}">'
            f'{html.escape(verdict)}</span>{f" downtime {downtime:.1f} s" if downtime is not None else ""}</summary>'
            f'<div class="timeline">{"".join(bars) or "<em>no phase timed</em>"}</div>'
            f'<p>{html.escape(str(r.get("release_before")))} &rarr; {html.escape(str(r.get("release_after")))}, '
            f'previous release {html.escape(str(r.get("previous_release")))}, '
            f'kexec count {html.escape(str(r.get("kexec_count")))}</p><ul>{regions}</ul>'
            + (f'<p class="liveupdate">{html.escape(lu)}</p>' if lu else "")
            + (f'<p class="phases">systemd: {html.escape(phases)}</p>' if phases else "")
            + f'{error}</details></section>')


def render_html(results: dict) -> str:
    """Hosts grouped by verdict (failures first, open; verified ones folded), each with its timeline.

    Plain HTML and CSS (details/summary to fold): no script, no external resource; one pass over the hosts.
    """
    results = {str(host): _dict(r) for host, r in _dict(results).items()}
    scale = max([sum(seconds for _p, seconds, _c in _bars(r)) for r in results.values()] + [1.0])
    groups: dict = {}
    for host in sorted(results):
        groups.setdefault(str(results[host].get("verdict")), []).append(host)
    sections = []
    for verdict in sorted(groups, key=lambda v: (v == "verified", v)):
        hosts = groups[verdict]
        sections.append(f'<details class="group"{"" if verdict == "verified" else " open"}><summary><h2>'
                        f'{html.escape(verdict)}: {len(hosts)} host{"s" if len(hosts) != 1 else ""}</h2></summary>'
                        + "".join(_host_section(h, results[h], scale) for h in hosts) + "</details>")
    verified = len(groups.get("verified", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>KHO handover report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
summary h2 {{ display: inline; font-size: 1.2em; }} section.host summary {{ font-weight: bold; margin: 0.4em 0; }}
.timeline {{ display: flex; width: 100%; background: #eee; border-radius: 4px; overflow: hidden; min-height: 1.6em; }}
.bar {{ color: #fff; font-size: 0.8em; padding: 0.3em; white-space: nowrap; overflow: hidden; }}
.verdict {{ font-size: 0.8em; padding: 0.2em 0.5em; border-radius: 3px; color: #fff; }}
.ok {{ background: #2e7d32; }} .bad {{ background: #c62828; }} .error {{ color: #c62828; }}
.legend span {{ display: inline-block; padding: 0.2em 0.6em; margin-right: 0.5em; color: #fff; }}
</style></head><body>
<h1>KHO handover report</h1>
<p>{verified} of {len(results)} hosts verified.</p>
<p class="legend">{"".join(f'<span style="background:{c}">{p.replace("_", " ")}</span>' for p, c in PHASES if p != "jump")}</p>
{"".join(sections)}
</body></html>
"""
