# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kernel command line: the kernel's own tokenizer and grammar.  Not a public API.

A line is kept as (whitespace, token) pairs so that editing one parameter
leaves every other byte, quote and the order as they were.
"""

from __future__ import annotations

import re

SCRATCH_PARAMS = ("kho_scratch", "kho_bootmem")
RESERVE_MEM_MAX = 8
LABEL_MAX = 15  # RESERVE_MEM_NAME_SIZE - 1
# memparse(): simple_strtoull(base 0) then one optional suffix letter.
_NUMBER = r"(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)"
_SIZE = re.compile(rf"({_NUMBER})([KMGTPEkmgtpe]?)")
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_LABEL_BAD = re.compile(r"[\s:\"'\\]|[^\x21-\x7e]")
U64 = (1 << 64) - 1
COMMAND_LINE_SIZE = 2048  # x86: the line and its terminating NUL
# What kho_cmdline accepts, by full match; everything it writes is canonical (on/off, memparse sizes).
LABEL = re.compile(r"[A-Za-z0-9_.+-]{1,15}")
LABEL_FORM = "1 to 15 of A-Z a-z 0-9 _ . + -"
BOOLEANS = {"on": True, "off": False, "y": True, "n": False, "yes": True, "no": False, "1": True, "0": False,
            "true": True, "false": False, "enable": True, "disable": False}
MAX_DIGITS = 64  # of one number: 2^64 has 20 decimal, 22 octal, 16 hex digits
SIZE_FORM = "a number (decimal, 0x hex or 0 octal) with an optional K, M, G, T, P or E suffix, below 2^64"
# The writer's gate: a token kho_cmdline writes is made of these only (no quote, $, `, ;, |, &, <, >,
# bracket, brace, backslash, whitespace or control character), whatever the validators let through.
SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.,:%+=-]+")


class GrammarError(ValueError):
    """A value the kernel would reject (or that this collection refuses)."""


def _norm(key: str) -> str:
    return key.replace("-", "_")


def _tokens(line: str) -> tuple[list, str]:
    pairs = []
    i, n = 0, len(line)
    while i < n:
        j = i
        while j < n and line[j].isspace():
            j += 1
        if j == n:
            break
        k, quoted = j, False
        while k < n and (quoted or not line[k].isspace()):
            if line[k] == '"':
                quoted = not quoted
            k += 1
        pairs.append([line[i:j], line[j:k]])
        i = k
    return pairs, line[i:]


def key_value(token: str) -> tuple[str, str | None]:
    """What the kernel's next_arg() makes of one token."""
    bare = token[1:] if token.startswith('"') else token
    if "=" not in bare:
        return bare.rstrip('"'), None
    key, value = bare.split("=", 1)
    if value.startswith('"'):
        value = value[1:]
    if value.endswith('"'):
        value = value[:-1]
    return key, value


class Cmdline:
    """An editable kernel command line that renders back byte for byte."""

    def __init__(self, line: str = ""):
        self._pairs, self._tail = _tokens(line)

    def __str__(self) -> str:
        return "".join(ws + tok for ws, tok in self._pairs) + self._tail

    def _kernel_end(self) -> int:
        for i, (_ws, tok) in enumerate(self._pairs):
            if tok == "--":
                return i
        return len(self._pairs)

    def _indexes(self, key: str) -> list[int]:
        want = _norm(key)
        return [i for i in range(self._kernel_end()) if _norm(key_value(self._pairs[i][1])[0]) == want]

    def tokens(self) -> list:
        return [tok for _ws, tok in self._pairs]

    def params(self) -> list[tuple[str, str | None]]:
        return [key_value(tok) for _ws, tok in self._pairs[:self._kernel_end()]]

    def get_all(self, key: str) -> list:
        return [key_value(self._pairs[i][1])[1] for i in self._indexes(key)]

    def get(self, key: str):
        """The last value, as the kernel applies it; None when absent or bare."""
        values = self.get_all(key)
        return values[-1] if values else None

    def has(self, key: str) -> bool:
        return bool(self._indexes(key))

    def set_all(self, key: str, values: list) -> None:
        """Make ``key`` appear once per value, in order, where it first stood."""
        tokens = [key if v is None else f"{key}={v}" for v in values]
        idx = self._indexes(key)
        for i, tok in zip(idx, tokens):
            self._pairs[i][1] = tok
        for i in reversed(idx[len(tokens):]):
            self._drop(i)
        at = idx[-1] + 1 if idx and len(tokens) >= len(idx) else self._kernel_end()
        for tok in tokens[len(idx):]:
            if at == 0 and self._pairs:
                self._pairs[0][0] = self._pairs[0][0] or " "
            self._pairs.insert(at, [" " if at else "", tok])
            at += 1

    def set(self, key: str, value: str | None) -> None:
        self.set_all(key, [value])

    def remove(self, key: str) -> None:
        self.set_all(key, [])

    def _drop(self, i: int) -> None:
        ws, _tok = self._pairs.pop(i)
        if i == 0 and self._pairs:
            self._pairs[0][0] = ws


# ---------------------------------------------------------------- grammar

def parse_bool(value: str) -> bool:
    """kstrtobool() as of 7.3: only the first one or two characters count."""
    if value:
        c = value[0].lower()
        if c in "yte1":
            return True
        if c in "nfd0":
            return False
        if c == "o" and len(value) > 1:
            if value[1].lower() == "n":
                return True
            if value[1].lower() == "f":
                return False
    raise GrammarError(f"{value!r} is not a kernel boolean (use on/off, y/n or 1/0)")


def memparse(text: str, pos: int = 0) -> tuple[int, int] | None:
    """(bytes, end) for a size at ``pos``, or None where memparse() reads no digits."""
    m = _SIZE.match(text, pos)
    if not m:
        return None
    digits = m.group(1)
    if len(digits) > MAX_DIGITS:  # no size has them; Python's int() refuses 4,300 decimal digits with a ValueError
        raise GrammarError(f"{digits[:24]}... has {len(digits)} digits; the form is {SIZE_FORM}")
    if digits[:2].lower() == "0x":
        number = int(digits, 16)
    else:
        number = int(digits, 8 if digits.startswith("0") else 10)
    return (number << _SHIFT[m.group(2).lower()]) & U64, m.end()


def parse_size(text: str, what: str = "size") -> int:
    got = memparse(text)
    if got is None or got[1] != len(text):
        raise GrammarError(f"{what} {text!r} is not a size: a number (decimal, 0x hex or 0 octal) "
                           "with an optional K, M, G, T, P or E suffix")
    return got[0]


def parse_scratch(value: str) -> dict:
    """kho_scratch= / kho_bootmem=: ``N%`` or ``LOWMEM,GLOBAL,PERNODE``."""
    hint = "use N% (e.g. 200%) or three sizes LOWMEM,GLOBAL,PERNODE (e.g. 16M,512M,256M)"
    if not value:
        raise GrammarError(f"an empty scratch size; {hint}")
    if value.endswith("%"):
        digits = value[:-1]
        if len(value) > 11 or not re.fullmatch(r"\+?[0-9]+", digits) or int(digits) > 0xFFFFFFFF:
            raise GrammarError(f"scratch scale {value!r} is not a percentage; {hint}")
        return {"kind": "percent", "percent": int(digits)}
    sizes, pos = [], 0
    for i in range(3):
        if i:
            if pos >= len(value) or value[pos] != ",":
                raise GrammarError(f"scratch size {value!r} needs exactly three sizes; {hint}")
            pos += 1
        got = memparse(value, pos)
        if got is None:
            raise GrammarError(f"scratch size {value!r} has no number at position {pos}; {hint}")
        sizes.append(got[0])
        pos = got[1]
    if pos != len(value):
        raise GrammarError(f"scratch size {value!r} has trailing text {value[pos:]!r}; {hint}")
    if not sum(sizes):
        raise GrammarError(f"scratch size {value!r} adds up to zero; {hint}")
    return {"kind": "sizes", "lowmem": sizes[0], "global": sizes[1], "pernode": sizes[2]}


def check_label(label: str) -> str:
    """What the kernel itself accepts in a label it reads (kho_params judges existing lines with it)."""
    if not label or len(label) > LABEL_MAX or _LABEL_BAD.search(label):
        raise GrammarError(f"reserve_mem label {label!r} must be 1 to {LABEL_MAX} printable characters "
                           "without spaces, colons, quotes or backslashes")
    return label


def canonical_size(n: int) -> str:
    """The shortest memparse spelling: the largest binary suffix that divides exactly."""
    for suffix, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and not n % (1 << shift):
            return f"{n >> shift}{suffix}"
    return str(n)


def request_size(value, what: str) -> int:
    """A size kho_cmdline is asked to write: the whole value must be one memparse size, no overflow."""
    text = _text(value, what)
    m = _SIZE.fullmatch(text)
    if not m:
        raise GrammarError(f"{what} {text!r} is not a size; the form is {SIZE_FORM}, e.g. 1M or 4096")
    number = memparse(text)[0]
    digits = m.group(1)
    exact = int(digits, 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10)
    if exact << _SHIFT[m.group(2).lower()] > U64:
        raise GrammarError(f"{what} {text!r} does not fit in 64 bits; the form is {SIZE_FORM}")
    return number


def gate(tokens: list) -> None:
    """The last check before a boot loader file or tool gets these tokens; a refusal here is a bug."""
    for token in tokens:
        if not SAFE_TOKEN.fullmatch(token):
            raise AssertionError(f"kexec.kho bug: refusing to write the token {token!r}: it passed validation "
                                 f"but not the writer's gate {SAFE_TOKEN.pattern}")


def check_length(line: str, what: str = "the command line") -> None:
    if len(line.encode()) >= COMMAND_LINE_SIZE:
        raise GrammarError(f"{what} would be {len(line.encode())} bytes; the kernel keeps at most "
                           f"{COMMAND_LINE_SIZE - 1} (COMMAND_LINE_SIZE {COMMAND_LINE_SIZE} on x86)")


def parse_reserve_mem(value: str) -> dict:
    """reserve_mem=SIZE:ALIGN:LABEL (ALIGN may be empty, the kernel then uses a cache line)."""
    hint = "the form is SIZE:ALIGN:LABEL, e.g. 1M:4096:oops"
    size_end = memparse(value)
    if size_end is None or not size_end[0]:
        raise GrammarError(f"reserve_mem {value!r} needs a non-zero size first; {hint}")
    size, pos = size_end
    if value[pos:pos + 1] != ":":
        raise GrammarError(f"reserve_mem {value!r}: expected ':' after the size; {hint}")
    align_end = memparse(value, pos + 1)
    align, apos = align_end if align_end else (0, pos + 1)
    if value[apos:apos + 1] != ":":
        raise GrammarError(f"reserve_mem {value!r}: expected ':' after the alignment; {hint}")
    label = check_label(value[apos + 1:])
    return {"size": size, "align": align, "label": label}


def kho_params(line: str) -> dict:
    """The KHO-related parameters of a command line, parsed; bad values are reported, not raised."""
    cmd = Cmdline(line)
    out: dict = {"kho": None, "kho_enabled": None, "scratch": None, "reserve_mem": [], "invalid": []}
    kho = cmd.get("kho")
    if cmd.has("kho"):
        out["kho"] = kho
        try:
            out["kho_enabled"] = parse_bool(kho or "")
        except GrammarError as exc:
            out["invalid"].append({"param": "kho", "value": kho, "error": str(exc)})
    for name in SCRATCH_PARAMS:
        if cmd.has(name):
            value = cmd.get(name) or ""
            try:
                out["scratch"] = {"param": name, "value": value, **parse_scratch(value)}
            except GrammarError as exc:
                out["invalid"].append({"param": name, "value": value, "error": str(exc)})
    for value in cmd.get_all("reserve_mem"):
        try:
            out["reserve_mem"].append({"value": value, **parse_reserve_mem(value or "")})
        except GrammarError as exc:
            out["invalid"].append({"param": "reserve_mem", "value": value, "error": str(exc)})
    return out


KHO_KEYS = ("kho", *SCRATCH_PARAMS, "reserve_mem")


def reserve_mem_value(region: dict) -> str:
    return f"{region['size']}:{region['align']}:{region['label']}"


def _same(current: list, wanted: list, parse) -> bool:
    """Whether the values on the line mean what is wanted and are spelled inside the gate (then kept)."""
    try:
        return len(current) == len(wanted) and all(
            v is not None and SAFE_TOKEN.fullmatch(v) and parse(v) == parse(w) for v, w in zip(current, wanted))
    except GrammarError:
        return False


def apply_kho(line: str, state: str, kho: str | None = None, scratch: str | None = None,
              scratch_param: str = "auto", reserve_mem: list | None = None) -> str:
    """The line with the KHO parameters as asked; every other byte is kept.

    ``state=absent`` removes them all.  ``None`` leaves a parameter as it is; an empty
    ``reserve_mem`` list removes the regions.  Values must come from check_request: a value already
    on the line that means the same and is spelled inside the gate is kept as written (idempotence);
    anything else there is replaced by the canonical form.
    """
    c = Cmdline(line)
    if state == "absent":
        for key in KHO_KEYS:
            c.remove(key)
        return str(c)
    if kho is not None and not _same(c.get_all("kho"), [kho], parse_bool):  # a repeated kho= collapses too
        c.set("kho", kho)
    if scratch is not None:
        name = scratch_param
        if name == "auto":
            name = next((n for n in SCRATCH_PARAMS if c.has(n)), SCRATCH_PARAMS[0])
        for other in SCRATCH_PARAMS:
            if other != name:
                c.remove(other)
        if not _same(c.get_all(name), [scratch], parse_scratch):
            c.set(name, scratch)
    if reserve_mem is not None:
        values = [reserve_mem_value(r) for r in reserve_mem]
        if not _same(c.get_all("reserve_mem"), values, parse_reserve_mem):
            c.set_all("reserve_mem", values)
    return str(c)


def written_tokens(before: str, after: str) -> list:
    """The tokens of ``after`` that ``before`` did not have: what a writer adds to a file."""
    had = Cmdline(before).tokens()
    out = []
    for tok in Cmdline(after).tokens():
        if tok in had:
            had.remove(tok)
        else:
            out.append(tok)
    return out


def kho_signature(line: str) -> dict:
    """What of a line decides the KHO behaviour of a boot, for 'reboot required'."""
    p = kho_params(line)
    scratch = p["scratch"]
    return {
        "kho": p["kho_enabled"],
        "scratch": None if scratch is None else {k: v for k, v in scratch.items() if k not in ("param", "value")},
        "reserve_mem": [(r["size"], max(r["align"], 64), r["label"]) for r in p["reserve_mem"]],
    }


def _text(value, what: str) -> str:
    if isinstance(value, bool):
        spelled = "on" if value else "off"
        raise GrammarError(f"{what} got the YAML boolean {value}; a bare on/off/yes/no is read as a boolean by YAML, "
                           f"quote it: {what}: '{spelled}'")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise GrammarError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    return value


def canonical_scratch(value) -> str:
    text = _text(value, "scratch")
    hint = "the form is N% (e.g. 200%) or three sizes LOWMEM,GLOBAL,PERNODE (e.g. 16M,512M,256M)"
    if re.fullmatch(r"[0-9]{1,10}%", text):
        parsed = parse_scratch(text)
        return f"{parsed['percent']}%"
    parts = text.split(",")
    if len(parts) != 3:
        raise GrammarError(f"scratch {text!r} is not a scratch size; {hint}")
    sizes = [request_size(part, "scratch") for part in parts]
    if not sum(sizes):
        raise GrammarError(f"scratch {text!r} adds up to zero; {hint}")
    return ",".join(canonical_size(n) for n in sizes)


def check_request(kho=None, scratch=None, reserve_mem=None) -> dict:
    """Validate kho_cmdline's input by full match; returns the canonical values to write."""
    out: dict = {"kho": None, "scratch": None, "reserve_mem": None}
    if kho is not None:
        text = _text(kho, "kho")
        if text.lower() not in BOOLEANS:
            raise GrammarError(f"kho {text!r} is not a kernel boolean; use on or off "
                               f"(also accepted: {', '.join(sorted(set(BOOLEANS) - {'on', 'off'}))})")
        out["kho"] = "on" if BOOLEANS[text.lower()] else "off"
    if scratch is not None:
        out["scratch"] = canonical_scratch(scratch)
    if reserve_mem is not None:
        if len(reserve_mem) > RESERVE_MEM_MAX:
            raise GrammarError(f"reserve_mem has {len(reserve_mem)} regions; the kernel takes at most {RESERVE_MEM_MAX}")
        regions, labels = [], set()
        for i, region in enumerate(reserve_mem):
            where = f"reserve_mem[{i}]"
            if not isinstance(region, dict) or set(region) - {"size", "align", "label"} or "size" not in region \
                    or "label" not in region:
                raise GrammarError(f"{where} must be a dict with size, label and optionally align, got {region!r}")
            size = request_size(region["size"], f"{where}.size")
            align = request_size(region.get("align", 0), f"{where}.align")
            label = _text(region["label"], f"{where}.label")
            if not LABEL.fullmatch(label):
                raise GrammarError(f"{where}.label {label!r} is not a label the collection writes; the form is "
                                   f"{LABEL_FORM} (the kernel keeps 15)")
            if not size:
                raise GrammarError(f"{where}.size {region['size']!r} must be larger than zero")
            if label in labels:
                raise GrammarError(f"{where}.label {label!r} is used twice; reserve_mem labels must be unique")
            labels.add(label)
            regions.append({"size": canonical_size(size), "align": canonical_size(align), "label": label})
        out["reserve_mem"] = regions
    return out
