"""plugin_utils/_report.py: the summary line, the HTML page (self-contained, escaped, total over any JSON), the
fleet timeline, and the report files.

The report's one data shape on every ansible-core, its summary line (and the filter), and the fleet timeline,
checked in headless Chromium by a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.filter.kho_report import FilterModule
from ansible_collections.kexec.kho.plugins.plugin_utils import _report

RESULTS = {
    "web-1": {"verdict": "verified", "release_before": "7.3.4", "release_after": "7.3.5", "kexec_count": 1,
              "previous_release": "7.3.4", "downtime": 12.5, "failed_step": None,
              "timings": {"preflight": 3.0, "jump": 15.0, "verify": 2.0},
              "regions": [{"name": "oops", "start_before": 0x3EB00000, "start_after": 0x3EB00000, "size": 1048576}]},
    "web-<2>": {"verdict": "failed, rolled back", "failed_step": "Load, jump and wait", "error": "kexec <failed>",
                "timings": {"preflight": 3.5, "jump": None, "verify": None}, "regions": []},
}


def test_live_update_in_the_summary_and_the_page():
    lu = {"method": "systemctl", "incoming_number": 2, "expected_number": 2, "sessions_before": [],
          "units_before": ["cache.service"], "lost": []}
    r = {**RESULTS["web-1"], "liveupdate": lu}
    assert _report.summary_line("web-1", r).endswith(
        "; live update by systemctl: number 2 (expected 2), preserved cache.service")
    r["liveupdate"]["lost"] = ["cache.service came back failed with 0 of its 1 stored fds"]
    assert "LOST cache.service came back failed" in _report.summary_line("web-1", r)
    assert "LOST cache.service came back failed" in _report.render_html({"web-1": r})
    assert "live update" not in _report.summary_line("web-1", RESULTS["web-1"])
    r["boot_phases"] = {"stopping": 3.825, "exit": 0.313, "systemd-shutdown": 0.676, "kernel": 12.018}
    assert _report.summary_line("web-1", r).endswith(
        "; systemd: stopping 3.8 s + exit 0.3 s + systemd-shutdown 0.7 s + kernel 12.0 s")
    assert "systemd: stopping 3.8 s" in _report.render_html({"web-1": r})


def test_summary_line():
    line = _report.summary_line("web-1", RESULTS["web-1"])
    assert line.startswith("web-1: verified; 7.3.4 -> 7.3.5") and "oops 0x3eb00000 -> 0x3eb00000" in line
    assert "at 'Load, jump and wait': kexec <failed>" in _report.summary_line("x", RESULTS["web-<2>"])


def test_html_is_self_contained_and_escaped():
    page = _report.render_html(RESULTS)
    assert "1 of 2 hosts verified" in page
    assert "web-&lt;2&gt;" in page and "kexec &lt;failed&gt;" in page and "<failed>" not in page
    assert not re.search(r"<script|https?://|src=", page)
    assert page.count('class="bar preflight"') == 2 and page.count('class="bar jump"') == 1
    assert "downtime 12.5 s" in page


def test_the_jump_is_drawn_in_its_parts_where_they_were_timed():
    r = {**RESULTS["web-1"], "timings": {"preflight": 3.0, "jump": 15.0, "load": 4.0, "to_gone": 1.0,
                                         "gone_to_banner": 8.5, "banner_to_answer": 1.5, "to_answer": 11.0,
                                         "verify": 2.0}}
    page = _report.render_html({"web-1": r})
    order = ["preflight", "load", "to_gone", "gone_to_banner", "banner_to_answer", "verify"]
    assert [p for p in (*order, "to_answer") if f'class="bar {p}"' in page] == order  # to_answer: the parts' sum
    assert 'class="bar jump"' not in page and "gone to banner 8.5 s (downtime 12.5 s)" in page
    # A wait not watched in parts (no banner check): the load, then the wait as one bar.
    unwatched = {**r, "timings": {**r["timings"], "to_gone": None, "gone_to_banner": None, "banner_to_answer": None}}
    page = _report.render_html({"web-1": unwatched})
    assert 'class="bar load"' in page and "to answer 11.0 s (downtime 12.5 s)" in page
    assert "downtime 12.5 s (preflight 3.0 s, load 4.0 s, to gone 1.0 s, gone to banner 8.5 s, banner to answer 1.5 s, verify 2.0 s);" \
        in _report.summary_line("web-1", r)


def test_a_fleet_page_groups_hosts_by_verdict_failures_first_and_open():
    results = {f"h{i:04d}": {**RESULTS["web-1"]} for i in range(30)}
    results["h0007"] = dict(RESULTS["web-<2>"])
    page = _report.render_html(results)
    groups = re.findall(r'<details class="group"( open)?><summary><h2>([^<]*)</h2>', page)
    assert groups == [(" open", "failed, rolled back: 1 host"), ("", "verified: 29 hosts")]
    assert page.index('id="host-h0007"') < page.index('id="host-h0000"')
    assert page.count("<details open><summary>h0007") == 1 and page.count("<details><summary>h00") == 29


SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)


JSON_VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)


FIELDS = ("verdict", "failed_step", "error", "release_before", "release_after", "kexec_count", "downtime",
          "previous_release", "timings", "regions", "boot_phases")


LIVEUPDATE = st.fixed_dictionaries({}, optional={k: JSON_VALUE for k in (
    "method", "incoming_number", "expected_number", "sessions_before", "units_before", "lost")})


RESULT = st.fixed_dictionaries({}, optional={**{k: JSON_VALUE for k in FIELDS},
                                             "liveupdate": LIVEUPDATE | JSON_VALUE}) | JSON_VALUE


REGION = st.fixed_dictionaries({}, optional={k: JSON_VALUE for k in ("name", "start_before", "start_after", "size")})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), RESULT | st.builds(lambda r, g: {**r, "regions": g}, st.fixed_dictionaries(
    {}, optional={k: JSON_VALUE for k in FIELDS}), st.lists(REGION, max_size=3)), max_size=4))
def test_every_renderer_is_total_over_any_json(results):
    """Numbers, strings, nulls, lists or NaN where numbers were expected: a page and a line each, never a raise."""
    page = _report.render_html(results)
    assert page.startswith("<!DOCTYPE html>") and not re.search(r"<script|https?://|src=", page)
    for host, r in results.items():
        line = _report.summary_line(host, r)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", line)


def test_a_null_as_ansible_core_2_16_renders_it_is_no_failure():
    """2.16 templates without native types: the role's null failed_step and numbers arrive as strings."""
    r = {**RESULTS["web-1"], "failed_step": "", "downtime": "12.5", "kexec_count": "1"}
    assert _report.summary_line("web-1", r).startswith("web-1: verified; 7.3.4 -> 7.3.5")
    page = _report.render_html({"web-1": r})
    assert 'class="error"' not in page and "downtime 12.5 s" in page


def test_terminal_output_never_carries_an_escape_sequence():
    line = _report.summary_line("h\x1b]0;owned\x07", {"verdict": "verified\x1b[2J", "error": "x", "failed_step": "s\r"})
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert "h\\x1b]0;owned\\x07: verified\\x1b[2J at 's\\x0d'" in line


def test_report_files_are_written_atomically_and_private(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o644)
    _report.write_private(str(target), "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    old = os.umask(0o277)
    try:
        _report.write_private(str(target), "newer")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o400  # a stricter umask wins
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left


ROOT = Path(__file__).resolve().parents[4]
T0 = 1_780_000_000.0
FULL = {"preflight": 8.0, "load": 6.0, "to_gone": 1.0, "gone_to_banner": 18.0, "banner_to_answer": 1.5, "verify": 4.0}
REGION = {"name": "oops", "size": 1048576, "start_before": 0x3EB00000, "start_after": 0x3EB00000, "revived": True,
          "ramoops": None}


def _host(name, batch, start, timings, verdict="verified", downtime=None, **extra):
    """A result as the callback keeps it on ansible-core 2.19 and later: native types, nulls."""
    ok = verdict == "verified"
    times = {"preflight": None, "jump": None, "load": None, "to_gone": None, "gone_to_banner": None,
             "banner_to_answer": None, "to_answer": None, "verify": None, **timings}
    times["total"] = round(sum(v for v in times.values() if v is not None) + 1.0, 2)
    r = {"host": name, "verdict": verdict, "failed_step": None, "error": None, "release_before": "7.3.4",
         "release_after": "7.3.5" if ok else None, "boot_id_before": "11111111-2222-3333-4444-555555555555",
         "boot_id_after": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee" if ok else None, "regions": [],
         "kexec_count": 1 if ok else None, "previous_release": "7.3.4" if ok else None, "downtime": downtime,
         "detection": "ssh banner", "method": "kexec", "liveupdate": None, "boot_phases": None,
         "detect_latency": 0.12 if ok else None, "plan": None, "timings": times,
         "batch": batch, "started_at": T0 + start, "finished_at": T0 + start + times["total"]}
    r.update(extra)
    return r


def fleet() -> dict:
    """Five hosts in two serial batches; web-3 failed at its load."""
    return {
        "web-1": _host("web-1", 1, 0.0, FULL, downtime=20.5, regions=[REGION]),
        "web-2": _host("web-2", 1, 0.4, {**FULL, "preflight": 9.5, "gone_to_banner": 23.0}, downtime=25.48,
                       regions=[REGION]),
        "web-3": _host("web-3", 1, 0.8, {"preflight": 7.0}, verdict="failed, rolled back", failed_step="load",
                       error="kexec_load failed: Cannot allocate memory"),
        "db-1": _host("db-1", 2, 41.0, {**FULL, "gone_to_banner": 29.0}, downtime=31.5),
        "db-2": _host("db-2", 2, 41.3, {**FULL, "preflight": 5.0}, downtime=20.4,
                      liveupdate={"method": "systemctl", "expected_number": 2, "incoming_number": 2,
                                  "kexec_count_before": 0, "kexec_count_after": 1, "sessions_before": [],
                                  "units_before": ["cache.service"], "lost": []},
                      boot_phases={"stopping": 3.825, "kernel": 12.018}),
    }


TYPED = ("regions", "liveupdate", "boot_phases", "plan")  # templated whole: 2.16 reads them back with literal_eval
CALLBACK = ("batch", "started_at", "finished_at")  # the callback's own, native on every core


def _leaf(value):
    return "" if value is None else str(value)


def as_2_16(r: dict) -> dict:
    """ansible-core 2.16's string templating of the role's set_fact: each templated leaf a string, a null ''."""
    return {k: (v if k in CALLBACK else {t: _leaf(x) for t, x in v.items()} if k == "timings"
                else (_leaf(v) if v is None else v) if k in TYPED else _leaf(v)) for k, v in r.items()}


def test_2_16_and_2_21_give_the_same_json_line_and_page():
    native = fleet()
    stringy = {h: as_2_16(r) for h, r in native.items()}
    assert stringy["web-2"]["downtime"] == "25.48" and stringy["web-3"]["kexec_count"] == ""
    for host in native:
        assert json.dumps(_report.normalise(native[host]), sort_keys=True) \
            == json.dumps(_report.normalise(stringy[host]), sort_keys=True)
        assert _report.summary_line(host, native[host]) == _report.summary_line(host, stringy[host])
    assert _report.render_html(native) == _report.render_html(stringy)


def test_numbers_are_numbers_and_what_is_missing_is_null():
    r = _report.normalise(as_2_16(fleet()["web-3"]))
    assert r["downtime"] is None and r["kexec_count"] is None and r["release_after"] is None and r["error"]
    assert r["timings"]["preflight"] == 7.0 and r["timings"]["verify"] is None and r["liveupdate"] is None
    r = _report.normalise({"downtime": "1.28", "kexec_count": "2", "failed_step": "None", "timings": {"jump": "19"},
                           "regions": [{"name": "oops", "start_before": "1052770304", "start_after": "",
                                        "size": "0x100000", "revived": "True"}, "junk"],
                           "plan": {"finalize": "False", "argv": ["kexec", None]}})
    assert (r["downtime"], r["kexec_count"], r["failed_step"], r["timings"]["jump"]) == (1.28, 2, None, 19.0)
    assert r["regions"] == [{"name": "oops", "start_before": 0x3EC00000, "start_after": None, "size": 0x100000,
                             "revived": True, "ramoops": None}]
    assert r["plan"]["finalize"] is False and r["plan"]["argv"] == ["kexec"] and r["plan"]["kernel"] is None
    r = _report.normalise({"way_back": {"returned": "False", "returned_to": "", "verdict": "failed after the jump",
                                        "return": {"failures": ["x"]}}})
    assert r["way_back"]["returned"] is False and r["way_back"]["returned_to"] is None
    assert r["way_back"]["return"] == {"failures": ["x"]} and r["way_back"]["decision"] is None
    assert _report.normalise({})["way_back"] is None
    empty = _report.normalise({})
    assert set(empty) >= set(_report.STRINGS + _report.FLOATS + _report.INTS) | {"timings", "regions", "liveupdate"}
    assert set(empty["timings"]) == set(_report.TIMINGS) and not any(empty["timings"].values())


SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.sampled_from(
    ["", "None", "1.28", "0x10", "True", "inf", "nan", "1e308", "-1e308"])
JSON_VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
RESULT = st.fixed_dictionaries({}, optional={k: JSON_VALUE for k in (
    *_report.STRINGS, *_report.FLOATS, *_report.INTS, "timings", "regions", "liveupdate", "plan", "way_back", "boot_phases")})


def _no_empty_strings(value) -> bool:
    if isinstance(value, dict):
        return all(_no_empty_strings(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_empty_strings(v) for v in value)
    return value not in ("", "None")


@settings(max_examples=200, deadline=None)
@given(RESULT | JSON_VALUE)
def test_normalise_is_total_idempotent_and_typed(result):
    r = _report.normalise(result)
    assert _report.normalise(r) == r and json.loads(json.dumps(r, allow_nan=False)) == r
    assert all(r[k] is None or isinstance(r[k], str) for k in _report.STRINGS)
    assert all(r[k] is None or isinstance(r[k], float) for k in _report.FLOATS)
    assert all(r[k] is None or (isinstance(r[k], int) and not isinstance(r[k], bool)) for k in _report.INTS)
    assert all(v is None or isinstance(v, float) for v in r["timings"].values())
    assert _no_empty_strings(r)
    line = _report.summary_line("h", result)
    assert " -> ," not in line and "count ," not in line and "downtime  " not in line and "; ;" not in line
    assert "None" not in line or "None" in json.dumps(result)  # only where the data said it, as a word of its own
    page = _report.render_html({"h": result, "g": result})
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page


@pytest.mark.parametrize("result", [{}, {"verdict": "not run"}, as_2_16(_host("x", 1, 0, {}, verdict="failed"))])
def test_the_line_and_the_page_say_unknown_never_none_or_blank(result):
    line = _report.summary_line("x", result)
    assert "None" not in line and " -> ," not in line and "downtime  s" not in line and "count ," not in line
    assert "unknown -> unknown" in line or "7.3.4 -> unknown" in line
    assert "downtime unknown" in line and "kexec count unknown" in line
    page = _report.render_html({"x": result})
    assert "None" not in page and "&rarr; unknown" in page


def test_the_filter_is_the_summary_line():
    filt = FilterModule().filters()["kho_summary_line"]
    r = fleet()["web-2"]
    assert filt(r, "web-2") == filt(as_2_16(r), "web-2") == _report.summary_line("web-2", r)
    assert filt(r, "web-2").startswith("web-2: verified; 7.3.4 -> 7.3.5 (previous release 7.3.4), kexec count 1, "
                                       "downtime 25.48 s (preflight 9.5 s, load 6.0 s, to gone 1.0 s, gone to banner 23.0 s,")


def _collections_path():
    if ROOT.parents[1].name != "ansible_collections":
        pytest.skip("runs from an ansible_collections/kexec/kho layout (tests/utils/layout.sh)")
    return str(ROOT.parents[2])


def test_the_filter_and_the_callback_in_a_playbook(tmp_path):
    """Two serial batches through ansible-playbook: the filter's line, the callback's batches, JSON and page."""
    results = {h: as_2_16(r) for h, r in fleet().items() if h != "db-2"}
    for r in results.values():
        for k in CALLBACK:
            r.pop(k)
    (tmp_path / "results.json").write_text(json.dumps({"results": results}))
    (tmp_path / "inventory").write_text("".join(f"{h} ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                                                for h in results))
    (tmp_path / "play.yml").write_text("""
- name: Hand over
  hosts: all
  serial: [3, 1]
  gather_facts: false
  tasks:
    - name: Record kho_handover_result
      ansible.builtin.set_fact:
        kho_handover_result: "{{ results[inventory_hostname] }}"
- name: Summary
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Line
      ansible.builtin.debug:
        msg: "{{ hostvars[item].kho_handover_result | default({'verdict': 'not run'}) | kexec.kho.kho_summary_line(item) }}"
      loop: "{{ groups['all'] + ['ghost'] }}"
""")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": _collections_path(), "ANSIBLE_CALLBACKS_ENABLED": "kexec.kho.kho_report",
           "KHO_REPORT_JSON": str(tmp_path / "r.json"), "KHO_REPORT_HTML": str(tmp_path / "r.html"),
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory"),
                           "-e", f"@{tmp_path / 'results.json'}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f'"msg": "{_report.summary_line("web-3", results["web-3"])}"' in proc.stdout
    assert '"msg": "ghost: not run; unknown -> unknown, kexec count unknown, downtime unknown; no reserve_mem regions"' \
        in proc.stdout
    assert "KHO HANDOVER SUMMARY" in proc.stdout and "None" not in proc.stdout.split("KHO HANDOVER SUMMARY")[1]
    summary = json.loads((tmp_path / "r.json").read_text())
    assert {h: r["batch"] for h, r in summary.items()} == {"web-1": 1, "web-2": 1, "web-3": 1, "db-1": 2}
    for host, r in summary.items():
        expected = _report.normalise(fleet()[host])
        assert {k: v for k, v in r.items() if k not in CALLBACK} == {k: v for k, v in expected.items() if k not in CALLBACK}
        assert r["started_at"] <= r["finished_at"] and r["finished_at"] - r["started_at"] == pytest.approx(
            r["timings"]["total"], abs=0.01)
    assert "batch 2: 1 host" in (tmp_path / "r.html").read_text()


def test_the_fleet_is_laid_out_on_one_axis_batch_by_batch():
    rows, axis = _report.fleet(fleet())
    assert [tuple(row[:2]) for row in rows] == [(1, "web-1"), (1, "web-2"), (1, "web-3"), (2, "db-1"), (2, "db-2")]
    offsets = {h: offset for _b, h, offset, _bars, _r in rows}
    assert offsets["web-1"] == 0 and offsets["db-1"] == pytest.approx(41.0) and axis == pytest.approx(41.0 + 50.5)
    bars = {h: [(p, round(start, 2)) for p, start, _s, _c in b] for _b, h, _o, b, _r in rows}
    assert bars["web-2"] == [("preflight", 0.4), ("load", 9.9), ("to_gone", 15.9), ("gone_to_banner", 16.9),
                             ("banner_to_answer", 39.9), ("verify", 41.4)]
    assert bars["web-3"] == [("preflight", 0.8)]
    # Without the callback's clock (an older JSON, the bench): a batch starts where the one before it ended.
    bare = {h: {k: v for k, v in r.items() if k not in ("started_at", "finished_at")} for h, r in fleet().items()}
    rows, axis = _report.fleet(bare)
    offsets = {h: offset for _b, h, offset, _bars, _r in rows}
    assert offsets == {"web-1": 0, "web-2": 0, "web-3": 0, "db-1": 46.0, "db-2": 46.0} and axis == 46.0 + 50.5  # web-2's 46 s


def test_the_page_draws_each_host_once_on_the_fleet_axis():
    page = _report.render_html(fleet())
    fleet_part = page.split('<section class="fleet">')[1].split("</section>")[0]
    assert fleet_part.count('class="batch-title">batch 1: 3 hosts<') == 1 and "batch 2: 2 hosts" in fleet_part
    assert fleet_part.count('class="span preflight"') == 5 and fleet_part.count('class="span verify"') == 4
    assert fleet_part.count('class="downtime"') == 4 and "25.48 s</span>" in fleet_part and "unknown</span>" in fleet_part
    assert 'title="downtime 25.5 s"' in fleet_part
    assert "<script" not in page and "http" not in page and "src=" not in page and "url(" not in page


# -- the screenshot ------------------------------------------------------------------------------------------------

def read_png(path: Path) -> tuple:
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB or RGBA PNG, non-interlaced, in plain Python."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = header
    assert depth == 8 and colour in (2, 6) and not interlace, header
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append([tuple(line[x * bpp:x * bpp + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def _rgb(colour: str) -> tuple:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def _near(pixel, colour, tolerance=3) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel, colour))


def _runs(row, colour) -> list:
    """[start, end) of each horizontal run of the colour in a row of pixels."""
    runs, start = [], None
    for x, pixel in enumerate(row + [(-99, -99, -99)]):
        if _near(pixel, colour) and start is None:
            start = x
        elif not _near(pixel, colour) and start is not None:
            runs.append((start, x))
            start = None
    return runs


def test_the_fleet_timeline_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (tests/lab/lab.py setup-host installs it)")
    page, shot = tmp_path / "report.html", tmp_path / "report.png"
    page.write_text(_report.render_html({h: as_2_16(r) for h, r in fleet().items()}))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
                           page.as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-3000:]
    if os.environ.get("KHO_REPORT_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["KHO_REPORT_SCREENSHOT"])
    width, height, rows = read_png(shot)
    assert (width, height) == (1200, 900)
    colours = {phase: _rgb(c) for phase, c in _report.PHASES if phase != "jump"}
    # The rows where preflight's colour spans a bar right of the host names (the legend and each host's own
    # section start at the page's margin): five hosts.
    bar_rows = [y for y, row in enumerate(rows)
                if any(e - s >= 20 and s >= 200 for s, e in _runs(row, colours["preflight"]))]
    hosts = [y for i, y in enumerate(bar_rows) if i == 0 or bar_rows[i - 1] != y - 1]
    assert len(hosts) == 5, hosts
    for y in hosts:
        assert any(_runs(rows[y + 3], colours["preflight"]))
    # Every phase appears in the timeline, in order, on a verified host's row (web-2: the second of batch 1).
    row = rows[hosts[1] + 3]
    order = ("preflight", "load", "to_gone", "gone_to_banner", "banner_to_answer", "verify")
    starts = [min(s for s, _e in _runs(row, colours[p])) for p in order]
    assert starts == sorted(starts), starts
    # One time axis: batch 2 starts right of where batch 1's hosts started, and web-3 (failed) has preflight only.
    first = {y: min(s for s, _e in _runs(rows[y + 3], colours["preflight"])) for y in hosts}
    assert first[hosts[3]] > first[hosts[0]] + 300 and first[hosts[4]] > first[hosts[0]] + 300
    assert not _runs(rows[hosts[2] + 3], colours["load"]) and not _runs(rows[hosts[2] + 3], colours["verify"])
    # Each verified host's downtime is drawn under its bars; the batches have their own tints.
    down = _rgb(_report.DOWNTIME_COLOUR)
    assert sum(1 for y in range(hosts[0], hosts[4] + 30) if any(e - s >= 40 for s, e in _runs(rows[y], down))) >= 4
    tints = {_rgb("#f3f6fb"): hosts[0], _rgb("#fbf6ec"): hosts[3]}
    for tint, y in tints.items():
        assert any(_near(p, tint, 1) for p in rows[y][:40]), (tint, rows[y][:40])


def test_a_region_not_taken_up_is_never_shown_as_kept():
    r = _report.normalise({"verdict": "handed over, regions dropped: oops", "regions": [
        {"name": "oops", "size": 1048576, "start_before": 0x3EB00000, "start_after": 0x3EB00000, "revived": False},
        {"name": "trace", "size": 4194304, "start_before": 0x3E600000, "start_after": 0x3E600000, "revived": True}]})
    line = _report.summary_line("web-1", r)
    assert "oops 0x3eb00000 -> 0x3eb00000 (not taken up by the new kernel)" in line
    assert "trace 0x3e600000 -> 0x3e600000 (not" not in line and "trace 0x3e600000 -> 0x3e600000" in line
    assert "oops 0x3eb00000 -&gt; 0x3eb00000 (not taken up by the new kernel)" in _report.render_html({"web-1": r})


@pytest.mark.parametrize("field", ["release_before", "release_after", "previous_release"])
def test_a_release_that_is_not_one_word_is_quoted_never_the_lines_punctuation(field):
    line = _report.summary_line("h", {field: ";", "release_before": "7.3.4", **{field: ";"}})
    assert '";"' in line and "; ;" not in line and "-> ;" not in line, line
    assert "7.2.13" in _report.summary_line("h", {"release_before": "7.3.4", "release_after": "7.2.13"})
