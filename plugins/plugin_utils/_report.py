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

PHASES = (("preflight", "#6c8ebf"), ("jump", "#d79b00"), ("verify", "#82b366"))


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


def summary_line(host: str, r) -> str:
    r = _dict(r)
    regions = ", ".join(_region(g) for g in _regions(r))
    failed = f" at '{r.get('failed_step')}': {r.get('error')}" if _failed(r) else ""
    lu, phases = live_update(r), boot_phases(r)
    return plain(f"{host}: {r.get('verdict')}{failed}; {r.get('release_before')} -> {r.get('release_after')}, "
                 f"kexec count {r.get('kexec_count')}, downtime {r.get('downtime')} s; "
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


def render_html(results: dict) -> str:
    """A timeline per host, drawn with plain HTML and CSS: no script, no external resource."""
    results = {str(host): _dict(r) for host, r in _dict(results).items()}
    spans = [sum(max(_num(_dict(r.get("timings")).get(p)) or 0, 0) for p, _c in PHASES) for r in results.values()]
    scale = max(spans + [1.0])
    rows = []
    for host in sorted(results):
        r = results[host]
        timings = _dict(r.get("timings"))
        bars = []
        for phase, colour in PHASES:
            seconds = _num(timings.get(phase))
            if seconds is None or seconds < 0:
                continue
            label = f"{phase} {seconds:.1f} s"
            if phase == "jump" and _num(r.get("downtime")) is not None:
                label += f" (downtime {_num(r['downtime']):.1f} s)"
            bars.append(f'<div class="bar {phase}" style="width:{100 * seconds / scale:.2f}%;background:{colour}" '
                        f'title="{html.escape(label)}">{html.escape(label)}</div>')
        verdict = str(r.get("verdict"))
        ok = verdict == "verified"
        regions = "".join(f"<li>{html.escape(_region(g))} ({html.escape(str(g.get('size')))} bytes)</li>"
                          for g in _regions(r))
        lu, phases = live_update(r), boot_phases(r)
        error = (f'<p class="error">failed at {html.escape(str(r.get("failed_step")))}: '
                 f'{html.escape(str(r.get("error")))}</p>') if _failed(r) else ""
        rows.append(
            f'<section class="host" id="host-{html.escape(host)}"><h2>{html.escape(host)} '
            f'<span class="verdict {"ok" if ok else "bad"}">{html.escape(verdict)}</span></h2>'
            f'<div class="timeline">{"".join(bars) or "<em>no phase timed</em>"}</div>'
            f'<p>{html.escape(str(r.get("release_before")))} &rarr; {html.escape(str(r.get("release_after")))}, '
            f'previous release {html.escape(str(r.get("previous_release")))}, '
            f'kexec count {html.escape(str(r.get("kexec_count")))}</p><ul>{regions}</ul>'
            + (f'<p class="liveupdate">{html.escape(lu)}</p>' if lu else "")
            + (f'<p class="phases">systemd: {html.escape(phases)}</p>' if phases else "")
            + f'{error}</section>')
    verified = sum(1 for r in results.values() if r.get("verdict") == "verified")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>KHO handover report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
.timeline {{ display: flex; width: 100%; background: #eee; border-radius: 4px; overflow: hidden; min-height: 1.6em; }}
.bar {{ color: #fff; font-size: 0.8em; padding: 0.3em; white-space: nowrap; overflow: hidden; }}
.verdict {{ font-size: 0.7em; padding: 0.2em 0.5em; border-radius: 3px; color: #fff; }}
.ok {{ background: #2e7d32; }} .bad {{ background: #c62828; }} .error {{ color: #c62828; }}
.legend span {{ display: inline-block; padding: 0.2em 0.6em; margin-right: 0.5em; color: #fff; }}
</style></head><body>
<h1>KHO handover report</h1>
<p>{verified} of {len(results)} hosts verified.</p>
<p class="legend">{"".join(f'<span style="background:{c}">{p}</span>' for p, c in PHASES)}</p>
{"".join(rows)}
</body></html>
"""
