"""Kernel command line tokenizer/editor and the KHO parameter grammar."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import cmdline as C

EXAMPLES = 500


# ---------------------------------------------------------------- tokenizer and editor

@settings(max_examples=EXAMPLES)
@given(st.text(alphabet=' \t\n"=abk_-o1', max_size=60))
def test_render_round_trips_any_line(line):
    assert str(C.Cmdline(line)) == line


def test_edits_keep_everything_else():
    line = 'BOOT_IMAGE=/vmlinuz root=UUID=ab  ro quiet "acpi_osi=Windows 2020" kho=off reserve_mem=1M:4K:a  -- single kho=x'
    c = C.Cmdline(line)
    c.set("kho", "on")
    assert str(c) == line.replace(" kho=off ", " kho=on ")
    c.set_all("reserve_mem", ["1M:4K:a", "2M:4K:b"])
    assert str(c).endswith('kho=on reserve_mem=1M:4K:a reserve_mem=2M:4K:b  -- single kho=x')
    c.set("kho_scratch", "10%")
    assert 'reserve_mem=2M:4K:b kho_scratch=10%  -- single kho=x' in str(c)
    c.remove("reserve_mem")
    c.remove("kho_scratch")
    c.remove("kho")
    assert str(c) == 'BOOT_IMAGE=/vmlinuz root=UUID=ab  ro quiet "acpi_osi=Windows 2020"  -- single kho=x'


def test_repeated_keys_collapse_to_the_first_place_and_dash_equals_underscore():
    c = C.Cmdline("a kho=1 b kho-scratch=5% c kho=0 d")
    assert c.get("kho") == "0"  # the kernel applies the last
    assert c.get("kho_scratch") == "5%"
    c.set("kho", "on")
    assert str(c) == "a kho=on b kho-scratch=5% c d"


def test_quotes_and_bare_keys():
    assert C.key_value('"quoted=a b"') == ("quoted", "a b")
    assert C.key_value('k="v w"') == ("k", "v w")
    assert C.key_value("ro") == ("ro", None)
    c = C.Cmdline('"x=1 2"')
    c.set("kho", "on")
    assert str(c) == '"x=1 2" kho=on'
    c = C.Cmdline("")
    c.set("kho", "on")
    assert str(c) == "kho=on"
    c = C.Cmdline("-- init")
    c.set("kho", "on")
    assert str(c) == "kho=on -- init"


@settings(max_examples=EXAMPLES)
@given(st.lists(st.sampled_from(["ro", "kho=on", "kho=off", "quiet", "reserve_mem=1M:4K:x", "--", "a=b"]), max_size=8),
       st.lists(st.sampled_from(["1M:4K:x", "2M:0:y"]), max_size=3))
def test_set_all_is_idempotent_and_exact(words, values):
    c = C.Cmdline(" ".join(words))
    c.set_all("reserve_mem", values)
    once = str(c)
    c.set_all("reserve_mem", values)
    assert str(c) == once
    assert C.Cmdline(once).get_all("reserve_mem") == values
    assert _others(once) == _others(" ".join(words))  # nothing else moved or changed


def _others(line: str) -> list:
    """Tokens that are not kernel-side reserve_mem= (after '--' everything counts)."""
    words = line.split()
    end = words.index("--") if "--" in words else len(words)
    return [w for i, w in enumerate(words) if i >= end or not w.startswith("reserve_mem=")]


# ---------------------------------------------------------------- grammar, against a model of the kernel

def kernel_memparse(s: str, i: int = 0):
    """simple_strtoull(base 0) + memparse(), written the way lib/cmdline.c reads."""
    def digit(ch, base):
        v = int(ch, 16) if ch in "0123456789abcdefABCDEF" else 99
        return v if v < base else None
    base = 10
    if s[i:i + 1] == "0":
        base = 8
        if s[i + 1:i + 2] in ("x", "X") and s[i + 2:i + 3] and digit(s[i + 2], 16) is not None:
            base, i = 16, i + 2
    start, value = i, 0
    while i < len(s) and digit(s[i], base) is not None:
        value = value * base + digit(s[i], base)
        i += 1
    if i == start:
        return None
    shift = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}.get(s[i:i + 1].lower())
    if shift:
        value, i = value << shift, i + 1
    return value & C.U64, i


def kernel_scratch_ok(p: str) -> bool:
    if not p:
        return False
    if p.endswith("%"):
        digits = p[:-1]
        return len(p) <= 11 and digits.lstrip("+").isdigit() and digits.count("+") <= 1 \
            and not digits[1:].count("+") and int(digits) <= 0xFFFFFFFF and digits.isascii()
    total, i = 0, 0
    for n in range(3):
        if n:
            if p[i:i + 1] != ",":
                return False
            i += 1
        got = kernel_memparse(p, i)
        if got is None:
            return False
        total += got[0]
        i = got[1]
    return total > 0 and i == len(p)


SIZE_ALPHABET = "0123456789xXabcfgkKmMGtTpPeE,%+:"


@settings(max_examples=EXAMPLES)
@given(st.text(alphabet=SIZE_ALPHABET, max_size=16))
def test_scratch_grammar_matches_the_kernel(text):
    try:
        C.parse_scratch(text)
        ours = True
    except C.GrammarError:
        ours = False
    assert ours == kernel_scratch_ok(text)


@settings(max_examples=EXAMPLES)
@given(st.text(alphabet=SIZE_ALPHABET, max_size=12))
def test_memparse_matches_the_kernel(text):
    assert C.memparse(text) == kernel_memparse(text)


@settings(max_examples=EXAMPLES)
@given(st.text(alphabet="0123456789xkKmM:ab \"'", max_size=16))
def test_reserve_mem_never_accepts_what_the_kernel_rejects(text):
    try:
        parsed = C.parse_reserve_mem(text)
    except C.GrammarError:
        return
    size = kernel_memparse(text)
    assert size and size[0] and text[size[1]] == ":"
    align = kernel_memparse(text, size[1] + 1) or (0, size[1] + 1)
    assert text[align[1]] == ":"
    label = text[align[1] + 1:]
    assert 0 < len(label) < 16 and label.strip()
    assert parsed == {"size": size[0], "align": align[0], "label": label}


@pytest.mark.parametrize(("value", "expected"), [
    ("16M,512M,256M", {"kind": "sizes", "lowmem": 16 << 20, "global": 512 << 20, "pernode": 256 << 20}),
    ("200%", {"kind": "percent", "percent": 200}),
    ("0x10,0,0", {"kind": "sizes", "lowmem": 16, "global": 0, "pernode": 0}),
])
def test_scratch_examples(value, expected):
    assert C.parse_scratch(value) == expected


@pytest.mark.parametrize(("value", "message"), [
    ("", "empty"), ("16M,512M", "three sizes"), ("0,0,0", "adds up to zero"),
    ("1G,1G,1G,1G", "trailing text"), ("abc%", "not a percentage"), ("99999999999%", "not a percentage"),
])
def test_scratch_errors_name_value_and_form(value, message):
    with pytest.raises(C.GrammarError, match=message) as info:
        C.parse_scratch(value)
    assert "N%" in str(info.value) and "LOWMEM,GLOBAL,PERNODE" in str(info.value)


@pytest.mark.parametrize(("value", "message"), [
    ("0:4K:a", "non-zero size"), ("1M", "expected ':' after the size"), ("1M:4Q:a", "after the alignment"),
    ("1M:4K:", "1 to 15"), ("1M:4K:has space", "without spaces"), ("1M:4K:a:b", "colons"),
    ('1M:4K:"q"', "quotes"), ("1M:4K:sixteen_chars_xx", "1 to 15"),
])
def test_reserve_mem_errors(value, message):
    with pytest.raises(C.GrammarError, match=message):
        C.parse_reserve_mem(value)


@pytest.mark.parametrize(("value", "result"), [
    ("on", True), ("off", False), ("y", True), ("N", False), ("1", True), ("0", False), ("yes", True), ("oN", True),
    ("true", True), ("False", False), ("enable", True), ("disable", False),  # kstrtobool as of 7.3: e/t and d/f too
])
def test_kernel_booleans(value, result):
    assert C.parse_bool(value) is result


@pytest.mark.parametrize("value", ["", "o", "x", "maybe", "ox"])
def test_kernel_boolean_errors(value):
    with pytest.raises(C.GrammarError, match="not a kernel boolean"):
        C.parse_bool(value)


def test_kho_params_reports_bad_values_without_raising():
    p = C.kho_params("kho=maybe kho_bootmem=50% reserve_mem=1M:4K:a reserve_mem=junk")
    assert p["kho"] == "maybe" and p["kho_enabled"] is None
    assert p["scratch"] == {"param": "kho_bootmem", "value": "50%", "kind": "percent", "percent": 50}
    assert [r["label"] for r in p["reserve_mem"]] == ["a"]
    assert {i["param"] for i in p["invalid"]} == {"kho", "reserve_mem"}


@pytest.mark.parametrize("value", ["5" * 5000, "0x" + "f" * 70, "1" * 65 + "M"])
def test_a_number_with_too_many_digits_is_a_grammar_error_not_a_traceback(value):
    with pytest.raises(C.GrammarError, match="digits"):
        C.memparse(value)
    assert C.kho_params(f"reserve_mem={value}:4096:oops")["invalid"][0]["param"] == "reserve_mem"
