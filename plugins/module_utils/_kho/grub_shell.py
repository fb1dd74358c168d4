# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What /bin/sh makes of a GRUB defaults file, as grub-mkconfig sources it.  Not a public API.

The file is cut into commands the way sh cuts it (quotes, $(...), backquotes, here-documents,
compound commands; line breaks are "\\n" only).  Only the forms listed in docs/grub-files.md are
understood for GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT; any other way of setting them
raises ShellError with the line and the form to use, so nothing is edited that the shell reads
differently.
"""

from __future__ import annotations

import re

VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
HOW = ('write it as GRUB_CMDLINE_LINUX="..." on a line of its own (one assignment, double or single quotes, no '
       "backslash at the end of the line, no $(...), backquote or ${X:-...}; $NAME only for a variable assigned "
       "plainly above), outside any if, case, loop, function or here-document")
_OPS = ("&&", "||", ";;", "<<-", "<<", ">>", "<&", ">&", "<>", ">|", ";", "&", "|", "<", ">", "(", ")")
_ENDS = " \t\n;&|<>()"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:%+=/@-]*")
_MENTION = re.compile(r"(?<![A-Za-z0-9_])GRUB_CMDLINE_LINUX(?:_DEFAULT)?(?![A-Za-z0-9_])")
_OPENERS = {"if": "fi", "case": "esac", "while": "done", "until": "done", "for": "done", "{": "}"}
_COMMAND_POSITION = {"then", "do", "else", "elif", "!", "if", "while", "until", "{"}
_OPAQUE = {"eval": "evaluates text", ".": "sources a file", "source": "sources a file",
           "return": "stops the sourcing", "exit": "stops grub-mkconfig", "exec": "replaces the shell"}
UNKNOWN = object()


class ShellError(Exception):
    """Where (an offset in the text) and why a file is not one this module edits."""

    def __init__(self, offset: int, why: str):
        super().__init__(why)
        self.offset, self.why = offset, why


class Token:
    __slots__ = ("kind", "text", "start", "end")

    def __init__(self, kind: str, text: str, start: int, end: int):
        self.kind, self.text, self.start, self.end = kind, text, start, end


class Assignment:
    """One managed assignment: its line (0-based) is prefix + quote + inner + quote + rest."""

    def __init__(self, line: int, var: str, prefix: str, quote: str, inner: str, rest: str):
        self.line, self.var, self.prefix, self.quote, self.inner, self.rest = line, var, prefix, quote, inner, rest
        self.value: str | None = None

    def render(self, inner: str) -> str:
        quote = self.quote or '"'
        return f"{self.prefix}{quote}{inner}{quote}{self.rest}"


def _writes(text: str, start: int, end: int):
    """Mentions of our variables other than a plain $NAME or ${NAME} read: each may assign them (${X:=...})."""
    for m in _MENTION.finditer(text, start, end):
        if text[m.start() - 1:m.start()] == "$" and m.start() > start:
            continue
        if text[m.start() - 2:m.start()] == "${" and text[m.end():m.end() + 1] == "}" and m.start() - 1 > start:
            continue
        yield m


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


# ---------------------------------------------------------------- lexer

def _skip(text: str, i: int) -> int:
    """The end of the word piece starting at ``i``: an escape, a quoted string, an expansion, or one character."""
    c = text[i]
    if c == "\\":
        return min(i + 2, len(text))
    if c == "'":
        end = text.find("'", i + 1)
        if end < 0:
            raise ShellError(i, "a ' quote that is never closed")
        return end + 1
    if c == '"':
        return _closing(text, i + 1, '"', "a \" quote that is never closed")
    if c == "`":
        return _closing(text, i + 1, "`", "a backquote that is never closed")
    if c == "$" and text[i + 1:i + 2] == "(":
        return _parens_end(text, i + 2)
    if c == "$" and text[i + 1:i + 2] == "{":
        return _closing(text, i + 2, "}", "a ${ that is never closed")
    return i + 1


def _closing(text: str, i: int, close: str, why: str) -> int:
    start = i
    while i < len(text):
        c = text[i]
        if c == close:
            return i + 1
        if c == "\\":
            i += 2
        elif c in "`$\"'" and not (close == '"' and c == "'") and not (close == "`" and c != "`"):
            i = _skip(text, i)
        else:
            i += 1
    raise ShellError(start, why)


def _parens_end(text: str, i: int) -> int:
    start, depth = i, 1
    while i < len(text):
        c = text[i]
        if c in "\\'\"`$":
            i = _skip(text, i)
            continue
        if c == "#" and text[i - 1] in " \t\n(":
            i = text.find("\n", i)
            if i < 0:
                break
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
        if not depth:
            return i
    raise ShellError(start, "a $( that is never closed")


def _word_end(text: str, i: int) -> int:
    while i < len(text) and text[i] not in _ENDS:
        i = _skip(text, i)
    return i


def _heredoc(text: str, i: int, strip: bool, delimiter: str) -> Token:
    start = i
    while i < len(text):
        end = text.find("\n", i)
        end = len(text) if end < 0 else end
        line = text[i:end]
        if (line.lstrip("\t") if strip else line) == delimiter:
            return Token("heredoc", text[start:end + 1], start, min(end + 1, len(text)))
        i = end + 1
    raise ShellError(start, f"a here-document that never reaches its delimiter {delimiter!r}")


def lex(text: str) -> list:
    """Words, operators, newlines and here-document bodies, with their offsets; comments dropped."""
    tokens: list = []
    pending: list = []  # here-documents whose body starts after the next newline: [strip, delimiter]
    i = 0
    while i < len(text):
        c = text[i]
        if c in " \t" or text.startswith("\\\n", i):
            i += 1 if c in " \t" else 2
        elif c == "#":
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
        elif c == "\n":
            tokens.append(Token("nl", c, i, i + 1))
            i += 1
            for strip, delimiter in pending:
                tokens.append(_heredoc(text, i, strip, delimiter or ""))
                i = tokens[-1].end
            pending = []
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            end = i + len(op) if op else _word_end(text, i)
            tokens.append(Token("op" if op else "word", text[i:end], i, end))
            if op in ("<<", "<<-"):
                pending.append([op == "<<-", None])
            elif not op and pending and pending[-1][1] is None:
                pending[-1][1] = re.sub(r"[\\'\"]", "", tokens[-1].text)
            i = end
    if pending:
        raise ShellError(len(text), "a here-document with no body before the end of the file")
    return tokens


# ---------------------------------------------------------------- commands

class Command:
    """A complete command at the top level of the file: a simple command, a list, or a compound command."""

    def __init__(self):
        self.tokens: list = []
        self.compound: str | None = None  # "if", "case", "while", "until", "for", "{", "(" or "function"
        self.command_words: list = []  # the words in command position, at any depth

    def words(self) -> list:
        return [t for t in self.tokens if t.kind == "word"]

    def is_assignments(self) -> bool:
        return not self.compound and all(t.kind == "word" and _ASSIGNMENT.match(t.text) for t in self.tokens)


class _Cutter:
    """Cuts tokens into top-level commands, following the nesting of compound commands."""

    def __init__(self):
        self.commands: list = []
        self.current = Command()
        self.stack: list = []
        self.command_position = True
        self.after_redirect = False

    def feed(self, tok: Token, following: Token | None) -> None:
        if tok.kind == "heredoc":
            (self.current if self.current.tokens else self.commands[-1]).tokens.append(tok)
            return
        if not self.stack and (tok.kind == "nl" or tok.text in (";", "&")):
            self.end()
            return
        self.current.tokens.append(tok)
        if tok.kind == "word":
            self.word(tok, following)
        elif tok.kind == "op":
            self.op(tok.text)
        else:
            self.command_position = True

    def word(self, tok: Token, following: Token | None) -> None:
        text = tok.text
        if self.after_redirect:
            self.after_redirect = False
        elif self.stack and text == self.stack[-1] and (self.command_position or text == "esac"):
            self.stack.pop()
            self.command_position = False
        elif self.command_position and text in _OPENERS:
            self.open(text, _OPENERS[text])
            self.command_position = text not in ("for", "case")
        elif self.command_position and _ASSIGNMENT.match(text):
            pass
        elif self.command_position:
            self.command_position = text in _COMMAND_POSITION
            if not self.command_position:
                self.current.command_words.append(text)
            if following is not None and following.text == "(":
                self.current.compound = self.current.compound or "function"

    def op(self, text: str) -> None:
        in_case = bool(self.stack) and self.stack[-1] == "esac"
        if text == "(" and self.command_position and not in_case:
            self.open("(", ")")
        elif text == ")" and self.stack and self.stack[-1] == ")":
            self.stack.pop()
        elif text in ("<", ">", ">>", "<&", ">&", "<>", ">|", "<<", "<<-"):
            self.after_redirect = True
            return
        self.command_position = text != "(" or not in_case

    def open(self, word: str, closer: str) -> None:
        if not self.stack:
            self.current.compound = self.current.compound or word
        self.stack.append(closer)

    def end(self) -> None:
        if self.current.tokens:
            self.commands.append(self.current)
        self.current = Command()
        self.command_position = True


def commands(tokens: list) -> list:
    cutter = _Cutter()
    for i, tok in enumerate(tokens):
        cutter.feed(tok, tokens[i + 1] if i + 1 < len(tokens) else None)
    if cutter.stack:
        raise ShellError(cutter.current.tokens[0].start, f"a compound command never closed (no {cutter.stack[-1]!r})")
    cutter.end()
    return cutter.commands


# ---------------------------------------------------------------- values

def _parameter(raw: str, i: int, env: dict) -> tuple:
    """The value of the expansion at raw[i] == "$", and where it ends."""
    m = _NAME.match(raw, i + 1)
    if m:
        name, end = m.group(), m.end()
    elif raw.startswith("{", i + 1):
        end = raw.find("}", i) + 1
        name = raw[i + 2:end - 1]
        if not end or not _NAME.fullmatch(name):
            raise ShellError(i, f"the expansion {raw[i:end or len(raw)]} (the module evaluates only $NAME and ${{NAME}})")
    elif raw[i + 1:i + 2] in ("", '"') or raw[i + 1:i + 2].isspace():
        return "$", i + 1
    else:
        raise ShellError(i, f"the expansion {raw[i:i + 2]}... (a command substitution or a special parameter)")
    value = env.get(name, UNKNOWN)
    if value is UNKNOWN:
        raise ShellError(i, f"${name}, whose value the module cannot know (not assigned plainly above)")
    return value, end


def _double_quoted(raw: str, i: int, env: dict) -> tuple:
    out = []
    while raw[i] != '"':
        c = raw[i]
        if c == "\\":
            nxt = raw[i + 1]
            out.append(nxt if nxt in '$`"\\' else "" if nxt == "\n" else c + nxt)
            i += 2
        elif c == "$":
            value, i = _parameter(raw, i, env)
            out.append(value)
        elif c == "`":
            raise ShellError(i, "a command substitution `...`")
        else:
            out.append(c)
            i += 1
    return "".join(out), i + 1


def value(raw: str, env: dict) -> str:
    """What sh assigns for the word ``raw`` (no field splitting, no globbing); ShellError where it cannot tell."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "'":
            end = raw.index("'", i + 1)
            out.append(raw[i + 1:end])
            i = end + 1
        elif c == '"':
            piece, i = _double_quoted(raw, i + 1, env)
            out.append(piece)
        elif c == "\\":
            out.append("" if raw[i + 1:i + 2] == "\n" else raw[i + 1:i + 2])
            i += 2
        elif c == "$":
            piece, i = _parameter(raw, i, env)
            out.append(piece)
        elif c == "`" or (c == "~" and (i == 0 or raw[i - 1] == ":")):
            raise ShellError(i, "a command substitution `...`" if c == "`" else "a tilde expansion")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def managed_form(raw: str) -> tuple:
    """(quote, inner) of a value this module rewrites, or ShellError saying why it does not."""
    if _PLAIN.fullmatch(raw):
        return "", raw
    if "\\\n" in raw:
        raise ShellError(0, "a backslash-newline continuation")
    quote = raw[:1]
    if quote in ("'", '"') and raw.endswith(quote) and len(raw) > 1 and _skip(raw, 0) == len(raw):
        inner = raw[1:-1]
        if "\n" in inner:
            raise ShellError(0, "a value that spans several lines")
        return quote, inner
    if quote in ("'", '"') or any(q in raw for q in "'\""):
        raise ShellError(0, "a value made of several quoted and unquoted parts")
    if "$" in raw or "`" in raw:
        raise ShellError(0, "an unquoted expansion, which the shell splits and globs")
    raise ShellError(0, "an unquoted value with characters the shell treats specially (a backslash, a glob, ~ ...)")


# ---------------------------------------------------------------- the file

class Scan:
    """One file, sourced: its managed assignments, in order, and the variables as they stand after it."""

    def __init__(self, text: str, env: dict | None):
        self.text, self.env = text, env
        self.assignments: list = []
        self.lines = text.split("\n")
        cmds = commands(lex(text))
        by_line: dict = {}
        for cmd in cmds:
            for n in range(line_of(text, cmd.tokens[0].start), line_of(text, cmd.tokens[-1].end - 1) + 1):
                by_line.setdefault(n, []).append(cmd)
        for cmd in cmds:
            self.command(cmd, by_line)

    def command(self, cmd: Command, by_line: dict) -> None:
        words = cmd.words()
        if words and words[0].text == "export" and len(cmd.tokens) == len(words) and not cmd.compound:
            if all(_NAME.fullmatch(w.text) for w in words[1:]):
                return  # export NAME... changes no value
            words = words[1:] if all(_ASSIGNMENT.match(w.text) for w in words[1:]) else []
        elif cmd.is_assignments():
            words = cmd.words()
        else:
            words = []
        if not words:
            self.other(cmd)
            return
        ours = [w for w in words if w.text.split("=", 1)[0] in VARS]
        if ours and (len(words) > 1 or len(by_line[line_of(self.text, words[0].start)]) > 1):
            raise ShellError(ours[0].start, "several assignments or commands on one line")
        for w in words:
            name, raw = w.text.split("=", 1)
            self.check_reads(raw, w.start + len(name) + 1)
            if name in VARS:
                self.ours(cmd, w, name, raw)
            elif self.env is not None:
                self.other_value(name, raw)

    def ours(self, cmd: Command, word: Token, name: str, raw: str) -> None:
        at = word.start + len(name) + 1
        try:
            quote, inner = managed_form(raw)
        except ShellError as exc:
            raise ShellError(at, exc.why) from None
        n = line_of(self.text, word.start)
        start = self.text.rfind("\n", 0, word.start) + 1
        a = Assignment(n - 1, name, self.text[start:at], quote, inner, self.lines[n - 1][word.end - start:])
        if self.env is not None:
            try:
                a.value = value(raw, self.env)
            except ShellError as exc:
                raise ShellError(at + exc.offset, exc.why) from None
            if re.search("[\udc80-\udcff]", a.value):
                raise ShellError(at, "a value that is not UTF-8")
            self.env[name] = a.value
        self.assignments.append(a)

    def other_value(self, name: str, raw: str) -> None:
        try:
            self.env[name] = value(raw, self.env)
        except ShellError:
            self.env[name] = UNKNOWN

    def check_reads(self, raw: str, offset: int) -> None:
        for m in _writes(raw, 0, len(raw)):
            raise ShellError(offset + m.start(), f"{m.group()} set inside an expansion")

    def other(self, cmd: Command) -> None:
        """A command this module does not model: refused if it may set our variables, else its names unknown."""
        start, end = cmd.tokens[0].start, cmd.tokens[-1].end
        opaque = [w for w in cmd.command_words if w in _OPAQUE]
        if opaque:
            raise ShellError(start, f"{opaque[0]} {_OPAQUE[opaque[0]]} the module cannot follow")
        for m in _writes(self.text, start, end):
            raise ShellError(m.start(), f"{m.group()} set {self.where(cmd, m.start())}")
        if self.env is not None:
            for name in set(_NAME.findall(self.text[start:end])) & set(self.env):
                if name not in VARS:
                    self.env[name] = UNKNOWN

    @staticmethod
    def where(cmd: Command, offset: int) -> str:
        if any(t.kind == "heredoc" and t.start <= offset < t.end for t in cmd.tokens):
            return "inside a here-document"
        if cmd.compound:
            return {"{": "inside a { ... } group", "(": "inside a ( ... ) subshell", "function": "inside a function",
                    "if": "inside an if ... fi", "case": "inside a case ... esac"}.get(
                cmd.compound, f"inside a {cmd.compound} loop")
        words = cmd.words()
        if words and words[0].text in ("readonly", "export", "unset", "local", "read"):
            return f"by {words[0].text}, a form the module does not rewrite"
        return f"by or before a command ({' '.join(w.text for w in words)[:60]})"
