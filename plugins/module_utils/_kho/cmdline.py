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
    """kstrtobool(): only the first one or two characters count."""
    if value:
        c = value[0].lower()
        if c in "y1":
            return True
        if c in "n0":
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
    if not label or len(label) > LABEL_MAX or _LABEL_BAD.search(label):
        raise GrammarError(f"reserve_mem label {label!r} must be 1 to {LABEL_MAX} printable characters "
                           "without spaces, colons, quotes or backslashes")
    return label


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


def apply_kho(line: str, state: str, kho: str | None = None, scratch: str | None = None,
              scratch_param: str = "auto", reserve_mem: list | None = None) -> str:
    """The line with the KHO parameters as asked; every other byte is kept.

    ``state=absent`` removes them all.  ``None`` leaves a parameter as it is; an empty
    ``reserve_mem`` list removes the regions.  Values must be validated already.
    """
    c = Cmdline(line)
    if state == "absent":
        for key in KHO_KEYS:
            c.remove(key)
        return str(c)
    if kho is not None:
        c.set("kho", kho)
    if scratch is not None:
        name = scratch_param
        if name == "auto":
            name = next((n for n in SCRATCH_PARAMS if c.has(n)), SCRATCH_PARAMS[0])
        for other in SCRATCH_PARAMS:
            if other != name:
                c.remove(other)
        c.set(name, scratch)
    if reserve_mem is not None:
        c.set_all("reserve_mem", [reserve_mem_value(r) for r in reserve_mem])
    return str(c)


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


def check_request(kho=None, scratch=None, reserve_mem=None) -> dict:
    """Validate kho_cmdline's input with the kernel's grammar; returns the values to write."""
    out: dict = {"kho": None, "scratch": None, "reserve_mem": None}
    if kho is not None:
        kho = _text(kho, "kho")
        if kho not in ("on", "off"):
            parse_bool(kho)  # a kernel boolean is accepted as written; others raise
        out["kho"] = kho
    if scratch is not None:
        scratch = _text(scratch, "scratch")
        parse_scratch(scratch)
        out["scratch"] = scratch
    if reserve_mem is not None:
        if len(reserve_mem) > RESERVE_MEM_MAX:
            raise GrammarError(f"reserve_mem has {len(reserve_mem)} regions; the kernel takes at most {RESERVE_MEM_MAX}")
        regions, labels = [], set()
        for i, region in enumerate(reserve_mem):
            where = f"reserve_mem[{i}]"
            if not isinstance(region, dict) or set(region) - {"size", "align", "label"} or "size" not in region \
                    or "label" not in region:
                raise GrammarError(f"{where} must be a dict with size, label and optionally align, got {region!r}")
            size = _text(region["size"], f"{where}.size")
            align = _text(region.get("align", 0), f"{where}.align")
            label = check_label(_text(region["label"], f"{where}.label"))
            if not parse_size(size, f"{where}.size"):
                raise GrammarError(f"{where}.size {size!r} must be larger than zero")
            parse_size(align, f"{where}.align")
            if label in labels:
                raise GrammarError(f"{where}.label {label!r} is used twice; reserve_mem labels must be unique")
            labels.add(label)
            regions.append({"size": size, "align": align, "label": label})
        out["reserve_mem"] = regions
    return out
