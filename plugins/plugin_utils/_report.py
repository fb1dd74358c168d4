# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The handover summary as a line of text and as one self-contained HTML page.  Not a public API."""

from __future__ import annotations

import html

PHASES = (("preflight", "#6c8ebf"), ("jump", "#d79b00"), ("verify", "#82b366"))


def _num(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def summary_line(host: str, r: dict) -> str:
    regions = ", ".join(
        f"{g.get('name')} 0x{int(g['start_before']):x} -> "
        + (f"0x{int(g['start_after']):x}" if g.get("start_after") not in (None, "None") else "missing")
        for g in r.get("regions") or [])
    failed = f" at '{r.get('failed_step')}': {r.get('error')}" if r.get("failed_step") not in (None, "None") else ""
    return (f"{host}: {r.get('verdict')}{failed}; {r.get('release_before')} -> {r.get('release_after')}, "
            f"kexec count {r.get('kexec_count')}, downtime {r.get('downtime')} s; {regions or 'no reserve_mem regions'}")


def render_html(results: dict) -> str:
    """A timeline per host, drawn with plain HTML and CSS: no script, no external resource."""
    spans = [sum(_num((r.get("timings") or {}).get(p)) or 0 for p, _c in PHASES) for r in results.values()]
    scale = max(spans + [1.0])
    rows = []
    for host in sorted(results):
        r = results[host]
        timings = r.get("timings") or {}
        bars = []
        for phase, colour in PHASES:
            seconds = _num(timings.get(phase))
            if seconds is None:
                continue
            label = f"{phase} {seconds:.1f} s"
            if phase == "jump" and _num(r.get("downtime")) is not None:
                label += f" (downtime {float(r['downtime']):.1f} s)"
            bars.append(f'<div class="bar {phase}" style="width:{100 * seconds / scale:.2f}%;background:{colour}" '
                        f'title="{html.escape(label)}">{html.escape(label)}</div>')
        verdict = str(r.get("verdict"))
        ok = verdict == "verified"
        regions = "".join(
            f"<li>{html.escape(str(g.get('name')))}: 0x{int(g['start_before']):x} &rarr; "
            + (f"0x{int(g['start_after']):x}" if g.get("start_after") not in (None, "None") else "missing")
            + f" ({html.escape(str(g.get('size')))} bytes)</li>"
            for g in r.get("regions") or [])
        error = (f'<p class="error">failed at {html.escape(str(r.get("failed_step")))}: '
                 f'{html.escape(str(r.get("error")))}</p>') if r.get("failed_step") not in (None, "None") else ""
        rows.append(
            f'<section class="host" id="host-{html.escape(host)}"><h2>{html.escape(host)} '
            f'<span class="verdict {"ok" if ok else "bad"}">{html.escape(verdict)}</span></h2>'
            f'<div class="timeline">{"".join(bars) or "<em>no phase timed</em>"}</div>'
            f'<p>{html.escape(str(r.get("release_before")))} &rarr; {html.escape(str(r.get("release_after")))}, '
            f'previous release {html.escape(str(r.get("previous_release")))}, '
            f'kexec count {html.escape(str(r.get("kexec_count")))}</p><ul>{regions}</ul>{error}</section>')
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
