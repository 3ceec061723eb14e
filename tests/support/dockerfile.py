"""A Dockerfile reader and a .dockerignore matcher, enough to check the store's image
without a Docker engine.

- `parse(text)`: instructions in order, with line continuations (the escape character at
  the end of a line, `\\` unless an `# escape=` directive says otherwise), comment lines
  inside continuations dropped, JSON (exec) form decoded.
- `DockerIgnore`: the build context's exclusion rules (Go filepath.Match patterns plus `**`,
  `!` exceptions, last match wins, an excluded directory excludes what is inside it).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(\S+)\s*$")


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # everything after the keyword, continuations joined
    line: int  # first line of the instruction

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None."""
        if not self.value.startswith("["):
            return None
        try:
            value = json.loads(self.value)
        except ValueError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse(text: str) -> list[Instruction]:
    lines = text.splitlines()
    escape = "\\"
    start = 0
    for start, line in enumerate(lines):  # noqa: B007 - `start` is read after the loop; parser directives: only before anything else
        match = _DIRECTIVE.match(line)
        if not match:
            break
        if match.group(1).lower() == "escape":
            escape = match.group(2)
    else:
        start = len(lines)

    out: list[Instruction] = []
    buf: list[str] = []
    first = 0
    for number, raw in enumerate(lines[start:], start + 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank and comment lines, also in the middle of a continuation
        if not buf:
            first = number
        if stripped.endswith(escape):
            buf.append(stripped[: -len(escape)].strip())
            continue
        buf.append(stripped)
        joined = " ".join(part for part in buf if part)
        keyword, _, value = joined.partition(" ")
        out.append(Instruction(keyword.upper(), value.strip(), first))
        buf = []
    if buf:
        raise ValueError(f"line {first}: the file ends inside a continuation")
    return out


def flags(value: str) -> tuple[dict[str, str], str]:
    """Split leading `--name=value` flags from an instruction's value."""
    found = {}
    rest = value
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        name, _, val = word[2:].partition("=")
        found[name] = val
        rest = rest.lstrip()
    return found, rest


def env_pairs(value: str) -> dict[str, str]:
    """`ENV a=1 b="two words"` or the legacy `ENV key value`."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        key, _, rest = value.partition(" ")
        return {key: rest.strip()}
    return dict(word.split("=", 1) for word in words)


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    if not starts:
        raise ValueError("no FROM instruction")
    return instructions[starts[-1] :]


# -- .dockerignore --------------------------------------------------------------------------
def _pattern_regex(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 2
                if pattern[i : i + 1] == "/":
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i)
            if end == -1:
                out += re.escape(ch)
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    def __init__(self, text: str):
        self.rules: list[tuple[bool, re.Pattern, str]] = []  # (is_exception, regex, pattern)
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
            self.rules.append((exception, _pattern_regex(pattern), pattern))

    def excluded(self, path: str) -> bool:
        """Is this context-relative path (posix) left out of the build context?"""
        parts = path.strip("/").split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for exception, regex, _ in self.rules:
            if any(regex.match(p) for p in prefixes):
                result = not exception
        return result

    def context_files(self, root: Path) -> list[str]:
        """Every file of `root` that the build context holds (sorted, posix, relative)."""
        has_exceptions = any(exc for exc, _, _ in self.rules)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            rel = (lambda name: name) if rel_dir == "." else (lambda name, d=rel_dir: f"{d}/{name}")
            if not has_exceptions:  # an excluded directory cannot hold anything included
                dirnames[:] = [d for d in dirnames if not self.excluded(rel(d))]
            found += [rel(f) for f in filenames if not self.excluded(rel(f))]
        return sorted(found)
