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

import bisect
import re

VARS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
HOW = ('write it as GRUB_CMDLINE_LINUX="..." on a line of its own (one assignment, double or single quotes, no '
       "backslash at the end of the line, no $(...), backquote or ${X:-...}; $NAME only for a variable assigned "
       "plainly above), outside any if, case, loop, function, list (&&, ||, |) or here-document")
_OPS = ("&&", "||", ";;", "<<-", "<<", ">>", "<&", ">&", "<>", ">|", ";", "&", "|", "<", ">", "(", ")")
_REDIRECTS = ("<", ">", ">>", "<&", ">&", "<>", ">|", "<<", "<<-")
_ENDS = " \t\n;&|<>()"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_PLAIN = re.compile(r"[A-Za-z0-9_.,:%+=/@-]*")
_MENTION = re.compile(r"(?<![A-Za-z0-9_])GRUB_CMDLINE_LINUX(?:_DEFAULT)?(?![A-Za-z0-9_])")
_OPENERS = {"if": "fi", "case": "esac", "while": "done", "until": "done", "for": "done", "{": "}"}
_COMMAND_POSITION = {"then", "do", "else", "elif", "!", "if", "while", "until", "{", "time"}
# Words that run text, change what later lines mean or stop the sourcing: refused wherever a command may run.
_OPAQUE = {"eval": "evaluates text", ".": "sources a file", "source": "sources a file",
           "command": "runs a command", "builtin": "runs a builtin", "exec": "replaces the shell",
           "return": "stops the sourcing", "exit": "stops grub-mkconfig",
           "break": "leaves grub-mkconfig's loop over the drop-ins in a way",
           "continue": "leaves grub-mkconfig's loop over the drop-ins in a way",
           "alias": "changes what later lines mean", "trap": "runs text at a time",
           "set": "changes the shell's options in a way", "shopt": "changes the shell's options in a way",
           "let": "evaluates arithmetic, which assigns variables,", "[[": "evaluates arithmetic, which assigns variables,",
           "declare": "sets attributes that change later assignments in a way", "typeset": "sets attributes that change "
           "later assignments in a way", "select": "reads a choice from the input in a way", "coproc": "runs a command in the background in a way"}
# Reserved words that only close or continue a compound command: one where none is open is a syntax error.
_CLOSERS = {"fi", "done", "esac", "}", "then", "else", "elif", "do", "in"}
# ... of which these are refused as any word at all, not only where a command starts.
_ANYWHERE = {"eval", ".", "source", "command", "builtin"}
OPAQUE_INSTEAD = ("put the assignment in the file itself, with no eval, ., source, command or builtin anywhere in the "
                  "file and no return, exit, exec, break, continue, alias, trap, set, shopt, let, declare, typeset or [[ "
                  "where a command runs")
# Builtins that set, unset or mark the variables their words name: each word must be a plain NAME or NAME=value.
_DECLARE = {"export", "readonly", "local", "unset", "read", "getopts", "mapfile", "readarray"}
_FLAGS = {"-p", "-r", "-v", "-f"}  # their options that change no value: anything else (-n, -a, -i ...) is refused
DECLARE_INSTEAD = "spell each word plainly, NAME or NAME=value, the name in letters, digits and _ with no quote or $"
# An operator after which a newline continues the list instead of ending it.
_CONTINUED = ("&&", "||", "|")
# Variables the shell itself changes: a plain assignment to one does not make its value known.
_SHELL_OWNED = {"PWD", "OLDPWD", "OPTIND", "OPTARG", "REPLY", "LINENO", "RANDOM", "SECONDS", "PPID", "SRANDOM"}
# Arithmetic, which may assign any variable a value names: $((...)), $[...], ${X:offset}, ${X[i]} (bash).
_ARITHMETIC = re.compile(r"\$\(\(|\$\[|\$\{[A-Za-z_][A-Za-z0-9_]*(?::[^-=?+]|\[)")
UNKNOWN = object()
VOLATILE = object()  # a variable a function may set whenever it is called: never known again
_DECLARED_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:=.*)?", re.S)


class ShellError(Exception):
    """Where (an offset in the text) and why a file is not one this module edits."""

    def __init__(self, offset: int, why: str, instead: str | None = None):
        super().__init__(why)
        self.offset, self.why, self.instead = offset, why, instead  # instead: the valid form, where HOW is not it


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


def unquoted(word: str) -> str:
    """The word after quote removal, expansions left as written and a quoted $ read as "?": what sh makes of a
    command's name or a builtin's word, so that a name spelled with quotes (GRUB_CMDLINE_LI""NUX) is seen."""
    out, i = [], 0
    while i < len(word):
        c = word[i]
        if c == "'":
            end = _skip(word, i)
            out.append(word[i + 1:end - 1].replace("$", "?"))
        elif c == '"':
            end = _skip(word, i)
            out.append(_unquoted_double(word[i + 1:end - 1]))
        elif c == "\\":
            end = i + 2
            out.append(word[i + 1:end].replace("$", "?").replace("\n", ""))
        else:
            end = _skip(word, i)
            out.append(word[i:end])
        i = end
    return "".join(out)


def _unquoted_double(inner: str) -> str:
    out, i = [], 0
    while i < len(inner):
        if inner[i] == "\\" and inner[i + 1:i + 2] in '$`"\\\n':
            out.append(inner[i + 1:i + 2].replace("$", "?").replace("\n", ""))
            i += 2
        else:
            end = _skip(inner, i) if inner[i] in "$`" else i + 1
            out.append(inner[i:end])
            i = end
    return "".join(out)


def bare_expansion(raw: str) -> bool:
    """Whether ``raw`` holds an expansion outside quotes, which the shell may split into several words."""
    i = 0
    while i < len(raw):
        if raw[i] in "$`":
            return True
        i = _skip(raw, i)
    return False


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
        self.command_words: list = []  # the words in command position, at any depth, as (word, the token after it)
        self.defines_function = False
        self.declared: list = []  # (builtin, word): the words of an export, read, unset ... at any depth
        self.background: int | None = None  # where the & that ends it at the top level stands
        self.operators: set = set()  # the &&, || and | that join it at the top level

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
        self.declaring: str | None = None  # the builtin of _DECLARE whose words follow, as sh spells it
        self.last: Token | None = None  # the command's last token other than a newline or a here-document body

    def feed(self, tok: Token, following: Token | None) -> None:
        if tok.kind == "heredoc":
            (self.current if self.current.tokens else self.commands[-1]).tokens.append(tok)
            return
        if not self.stack and self.ends(tok):
            self.end(tok.start if tok.text == "&" else None)
            return
        if not self.stack and tok.kind == "op" and tok.text in _CONTINUED:
            self.current.operators.add(tok.text)
        self.current.tokens.append(tok)
        self.last = tok if tok.kind != "nl" else self.last
        if tok.kind == "word":
            self.word(tok, following)
        elif tok.kind == "op":
            self.op(tok.text)
        else:
            self.command_position = True
            self.declaring = None

    def ends(self, tok: Token) -> bool:
        """Whether ``tok`` ends a top-level command: ; or &, or a newline that no &&, || or | before it continues
        (across blank lines, comments and here-document bodies, as sh reads a linebreak)."""
        if tok.kind == "nl":
            return self.continued() is None
        return tok.kind == "op" and tok.text in (";", "&")

    def continued(self) -> Token | None:
        """The &&, || or | that the command so far ends with, which the next command continues."""
        last = self.last
        return last if last is not None and last.kind == "op" and last.text in _CONTINUED else None

    def word(self, tok: Token, following: Token | None) -> None:
        text = tok.text
        if text.isdigit() and following is not None and following.start == tok.end and following.text[:1] in "<>":
            return  # an IO number (2>...), not a command's name
        if self.after_redirect:
            self.after_redirect = False
        elif self.declaring and not self.command_position:
            self.current.declared.append((self.declaring, tok))
        elif self.stack and text == self.stack[-1] and (self.command_position or text == "esac"):
            self.stack.pop()
            self.command_position = False
        elif self.command_position and not self.stack and text in _CLOSERS:
            raise ShellError(tok.start, f"{text} where no compound command is open (a syntax error: sh stops sourcing "
                                        "the file)")
        elif self.command_position and text == "function":
            raise ShellError(tok.start, "function, bash's keyword for a function (a syntax error in dash), whose body "
                                        "the module does not read as one", "define it as NAME() { ...; }")
        elif self.command_position and text in _OPENERS:
            self.open(text, _OPENERS[text])
            self.command_position = text not in ("for", "case")
        elif self.command_position and _ASSIGNMENT.match(text):
            pass
        elif self.command_position:
            self.command_position = text in _COMMAND_POSITION
            if not self.command_position:
                self.current.command_words.append((tok, following))
                self.declaring = unquoted(text) if unquoted(text) in _DECLARE else None
            if following is not None and following.text == "(":
                self.current.compound = self.current.compound or "function"
                self.current.defines_function = True

    def op(self, text: str) -> None:
        self.declaring = None if text not in _REDIRECTS else self.declaring
        in_case = bool(self.stack) and self.stack[-1] == "esac"
        if text == "(" and self.command_position and not in_case:
            self.open("(", ")")
        elif text == ")" and self.stack and self.stack[-1] == ")":
            self.stack.pop()
        elif text in _REDIRECTS:
            self.after_redirect = True
            return
        self.command_position = text != "(" or not in_case

    def open(self, word: str, closer: str) -> None:
        if not self.stack:
            self.current.compound = self.current.compound or word
        self.stack.append(closer)

    def end(self, background: int | None = None) -> None:
        if self.current.tokens:
            self.current.background = background
            self.commands.append(self.current)
        self.current = Command()
        self.command_position = True
        self.declaring = None
        self.last = None


def commands(tokens: list) -> list:
    cutter = _Cutter()
    for i, tok in enumerate(tokens):
        cutter.feed(tok, tokens[i + 1] if i + 1 < len(tokens) else None)
    if cutter.stack:
        raise ShellError(cutter.current.tokens[0].start, f"a compound command never closed (no {cutter.stack[-1]!r})")
    dangling = cutter.continued()
    if dangling is not None:
        raise ShellError(dangling.start, f"a list that ends with {dangling.text} and no command after it")
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
    if value is UNKNOWN or value is VOLATILE:
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
        elif c == "$" and raw[i + 1:i + 2] in ("'", '"'):
            raise ShellError(i, f"a {raw[i:i + 2]}...{raw[i + 1]} string, which bash and dash read differently")
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
        self.readonly: set = set()
        self.lines = text.split("\n")
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]  # where each line starts
        cmds = commands(lex(text))
        by_line: dict = {}
        for cmd in cmds:
            for n in range(self.line_of(cmd.tokens[0].start), self.line_of(cmd.tokens[-1].end - 1) + 1):
                by_line.setdefault(n, []).append(cmd)
        for cmd in cmds:
            self.command(cmd, by_line)

    def line_of(self, offset: int) -> int:
        """The line (from 1) of an offset, found in logarithmic time: a file holds up to a million commands."""
        return bisect.bisect_right(self.starts, offset)

    def command(self, cmd: Command, by_line: dict) -> None:
        self.unmodelled(cmd)
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
        if ours and (len(words) > 1 or len(by_line[self.line_of(words[0].start)]) > 1):
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
        n = self.line_of(word.start)
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
        if self.env.get(name) is VOLATILE:
            return
        try:
            self.env[name] = UNKNOWN if name in _SHELL_OWNED else value(raw, self.env)
        except ShellError:  # and whatever it assigns on the way (${X:=...}, $((X=1))) is unknown too
            self.env[name] = UNKNOWN
            self.forget(_NAME.findall(raw))

    def forget(self, names, how=UNKNOWN) -> None:
        """Names a command may have changed: unknown from now on; VOLATILE ones even after a plain assignment."""
        for name in set(names) - set(VARS):
            if self.env.get(name) is not VOLATILE and (how is VOLATILE or name in self.env):
                self.env[name] = how

    def unmodelled(self, cmd: Command) -> None:
        """What no form of this module models, refused wherever it is in the command."""
        if cmd.background is not None:
            raise ShellError(cmd.background, "a command run in the background (&), in a subshell whose assignments the "
                                             "shell drops", "run it in the foreground, without the &")
        self.opaque(cmd)
        self.declarations(cmd)
        self.arithmetic(cmd)
        self.fatal(cmd)

    def fatal(self, cmd: Command) -> None:
        """What makes sh stop sourcing the file (and grub-mkconfig fail): local outside a function, a readonly
        variable assigned or unset again."""
        for tok, _following in cmd.command_words:
            if unquoted(tok.text) == "local" and not cmd.defines_function:
                raise ShellError(tok.start, "local outside a function, where sh stops sourcing the file",
                                 "leave local out, or use it inside a function only")
        named = [(tok, m.group(1)) for tok in cmd.words() for m in [_ASSIGNMENT.match(tok.text)] if m]
        named += [(tok, tok.text) for builtin, tok in cmd.declared if builtin in ("unset", "read", "getopts", "mapfile")]
        for tok, name in named:
            if name in self.readonly:
                raise ShellError(tok.start, f"{name}, made readonly above, set again, where sh stops sourcing the file",
                                 f"assign {name} before its readonly, once")
        self.readonly.update(tok.text.partition("=")[0] for builtin, tok in cmd.declared if builtin == "readonly")

    @staticmethod
    def opaque(cmd: Command) -> None:
        """A builtin that runs text or changes what later lines mean, where a command starts (eval, exec ...) or as
        any word (eval, ., source, command, builtin: command eval '...' runs it too), or a command named by an
        expansion, which may be any of them."""
        for tok, following in cmd.command_words:
            name = unquoted(tok.text)
            if "$" in name or "`" in name:
                raise ShellError(tok.start, f"a command named by an expansion ({tok.text[:40]}), which may be any builtin",
                                 OPAQUE_INSTEAD)
            if name in _OPAQUE:
                raise ShellError(tok.start, f"{name} {_OPAQUE[name]} the module cannot follow", OPAQUE_INSTEAD)
            if name == "printf" and following is not None and unquoted(following.text) == "-v":
                raise ShellError(tok.start, "printf -v sets a variable the module cannot follow", OPAQUE_INSTEAD)
        for tok in cmd.words():
            name = unquoted(tok.text)
            if name in _ANYWHERE:
                raise ShellError(tok.start, f"{name} as a word of a command ({name} {_OPAQUE[name]}, run by command, builtin "
                                            "or a name from a variable the module cannot follow)", OPAQUE_INSTEAD)

    @staticmethod
    def declarations(cmd: Command) -> None:
        """The words of export, readonly, unset, read ...: each a plain NAME or NAME=value, or an option that
        changes no value, so that what they set is what they say."""
        for builtin, tok in cmd.declared:
            if tok.text in _FLAGS or tok.text == "--":
                continue
            if tok.text.startswith("-"):
                raise ShellError(tok.start, f"{builtin} {tok.text[:40]}, an option the module does not model",
                                 DECLARE_INSTEAD)
            if not _DECLARED_WORD.fullmatch(tok.text) or bare_expansion(tok.text.partition("=")[2]):
                raise ShellError(tok.start, f"{builtin} {tok.text[:40]!r}, a word that is not a plain NAME or NAME=value "
                                            "(quotes or an expansion in the name, or an expansion outside quotes in the "
                                            "value, which sh may split into more names), so the module cannot tell what "
                                            "it sets", DECLARE_INSTEAD)

    @staticmethod
    def arithmetic(cmd: Command) -> None:
        """$((...)) and its kin evaluate text a variable may hold (X=GRUB_CMDLINE_LINUX=... then $(($X))): refused."""
        for i, tok in enumerate(cmd.tokens):
            text = unquoted(tok.text) if tok.kind == "word" else tok.text
            nested = tok.text == "(" and i + 1 < len(cmd.tokens) and cmd.tokens[i + 1].text == "(" \
                and cmd.tokens[i + 1].start == tok.end
            if tok.kind != "nl" and (_ARITHMETIC.search(text) or nested):
                raise ShellError(tok.start, "an arithmetic expansion or command ($((...)), ((...)), $[...], ${X:N} or "
                                            "${X[N]}), which may assign variables the module cannot see",
                                 "write the value literally")

    def check_reads(self, raw: str, offset: int) -> None:
        for m in _writes(raw, 0, len(raw)):
            raise ShellError(offset + m.start(), f"{m.group()} set inside an expansion")

    def other(self, cmd: Command) -> None:
        """A command this module does not model: refused if it may set our variables, else its names unknown."""
        start, end = cmd.tokens[0].start, cmd.tokens[-1].end
        for m in _writes(self.text, start, end):
            raise ShellError(m.start(), f"{m.group()} set {self.where(cmd, m.start())}")
        spelled = [unquoted(t.text) for t in cmd.words()]
        for tok, word in zip(cmd.words(), spelled):
            for m in _writes(word, 0, len(word)):
                raise ShellError(tok.start, f"{m.group()} set by a word spelled with quotes or a continuation "
                                            f"({tok.text[:40]})")
        if self.env is not None:
            names = _NAME.findall(self.text[start:end] + " " + " ".join(spelled))
            self.forget(names, VOLATILE if cmd.defines_function else UNKNOWN)

    @staticmethod
    def where(cmd: Command, offset: int) -> str:
        if any(t.kind == "heredoc" and t.start <= offset < t.end for t in cmd.tokens):
            return "inside a here-document"
        if cmd.operators & {"&&", "||"}:
            return "in a list joined by && or ||, which may not run it"
        if "|" in cmd.operators:
            return "in a pipeline (|), which runs it in a subshell"
        if cmd.compound:
            return {"{": "inside a { ... } group", "(": "inside a ( ... ) subshell", "function": "inside a function",
                    "if": "inside an if ... fi", "case": "inside a case ... esac"}.get(
                cmd.compound, f"inside a {cmd.compound} loop")
        words = cmd.words()
        if words and unquoted(words[0].text) in _DECLARE:
            return f"by {unquoted(words[0].text)}, a form the module does not rewrite"
        return f"by or before a command ({' '.join(w.text for w in words)[:60]})"
