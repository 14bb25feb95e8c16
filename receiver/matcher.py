"""The registry's pattern language for repositories and tags.

This module owns the whole language (see SPEC.md, "Pattern syntax"); nothing else in the
package parses a pattern. It knows nothing of events, rules or HTTP.

A pattern is parsed once into a small tree, its ``{...}`` alternatives are expanded (so that
``**`` inside a brace is judged a whole segment exactly as doublestar judges it), and the
result is translated into one regular expression. Compiled patterns are cached.
"""

from __future__ import annotations

import itertools
import re
import typing as t

__all__ = [
    "CompiledPattern",
    "PatternError",
    "compile_pattern",
    "repository_matches",
    "tag_matches",
]

#: The most alternatives one pattern may expand to; ``{a,b}{c,d}`` expands to four.
MAX_ALTERNATIVES = 1024

#: How deep ``{...}`` may nest.
MAX_DEPTH = 16

#: How many compiled patterns the module keeps; past this the cache starts again.
CACHE_SIZE = 65536


class PatternError(ValueError):
    """A pattern is malformed. Raised when it is compiled, never while matching.

    :param message: what is wrong, without the position.
    :param pattern: the whole pattern.
    :param position: the 0-based index of the offending character, if there is one.
    """

    def __init__(self, message: str, pattern: str, position: int | None = None) -> None:
        self.pattern = pattern
        self.position = position
        self.reason = message
        where = f" at position {position}" if position is not None else ""
        super().__init__(f"{message}{where} in {pattern!r}")


# The parsed tree. A sequence is a list of nodes; a node is one of these tuples:
#   ("lit", char)      a literal character ("/" included)
#   ("star", n)        a run of n stars
#   ("any",)           ?
#   ("class", regex)   [...] already translated
#   ("alt", [seq...])  {a,b,...}
_Node = tuple
_Seq = list


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0

    def error(self, message: str, position: int | None) -> PatternError:
        return PatternError(message, self.pattern, position)

    def parse(self) -> _Seq:
        seq = self.sequence(depth=0)
        if self.pos < len(self.pattern):  # only a stray "}" stops a top-level sequence
            raise self.error("unmatched '}'", self.pos)
        return seq

    def sequence(self, depth: int) -> _Seq:
        p, seq = self.pattern, []
        while self.pos < len(p):
            c = p[self.pos]
            if c == "}" or (c == "," and depth):
                break
            if c == "*":
                start = self.pos
                while self.pos < len(p) and p[self.pos] == "*":
                    self.pos += 1
                seq.append(("star", self.pos - start))
                continue
            if c == "?":
                seq.append(("any",))
            elif c == "[":
                seq.append(("class", self.char_class()))
                continue
            elif c == "{":
                seq.append(("alt", self.alternatives(depth + 1)))
                continue
            else:
                seq.append(("lit", c))
            self.pos += 1
        return seq

    def alternatives(self, depth: int) -> list[_Seq]:
        opened = self.pos
        if depth > MAX_DEPTH:
            raise self.error(f"braces nested deeper than {MAX_DEPTH}", opened)
        self.pos += 1  # the "{"
        alts = []
        while True:
            alts.append(_strip_blanks(self.sequence(depth)))
            if self.pos >= len(self.pattern):
                raise self.error("unclosed '{'", opened)
            if self.pattern[self.pos] == "}":
                self.pos += 1
                return alts
            self.pos += 1  # the ","

    def char_class(self) -> str:
        p, opened = self.pattern, self.pos
        i = opened + 1
        negate = i < len(p) and p[i] in "!^"
        if negate:
            i += 1
        items: list[str] = []
        first = True
        while True:
            if i >= len(p):
                raise self.error("unclosed '['", opened)
            c = p[i]
            if c == "]" and not first:
                break
            first = False
            if i + 2 < len(p) and p[i + 1] == "-" and p[i + 2] != "]":
                lo, hi = c, p[i + 2]
                if lo > hi:
                    raise self.error(f"reversed range '{lo}-{hi}'", i)
                items.append(f"{re.escape(lo)}-{re.escape(hi)}")
                i += 3
            else:
                items.append(re.escape(c))
                i += 1
        self.pos = i + 1
        body = "".join(items)
        # A class never matches the path separator.
        return f"[^/{body}]" if negate else f"(?!/)[{body}]"


def _strip_blanks(seq: _Seq) -> _Seq:
    """Drop white space around a brace alternative: ``{a, b}`` is ``{a,b}``."""
    start, end = 0, len(seq)
    while start < end and seq[start][0] == "lit" and seq[start][1].isspace():
        start += 1
    while end > start and seq[end - 1][0] == "lit" and seq[end - 1][1].isspace():
        end -= 1
    return seq[start:end]


def _expand(seq: _Seq, pattern: str) -> list[list[_Node]]:
    """Every brace-free sequence that *seq* stands for, in order, without repeats."""
    choices: list[list[list[_Node]]] = []
    for node in seq:
        if node[0] == "alt":
            options: list[list[_Node]] = []
            for alt in node[1]:
                options.extend(_expand(alt, pattern))
            choices.append(options)
        else:
            choices.append([[node]])
    count = 1
    for options in choices:
        count *= len(options)
        if count > MAX_ALTERNATIVES:
            raise PatternError(
                f"too many alternatives (more than {MAX_ALTERNATIVES})", pattern
            )
    out, seen = [], set()
    for combo in itertools.product(*choices):
        flat = [node for part in combo for node in part]
        key = tuple(flat)
        if key not in seen:
            seen.add(key)
            out.append(flat)
    return out


_GLOBSTAR = object()


def _translate(flat: list[_Node]) -> str:
    """One brace-free sequence as a regular expression (anchoring is the caller's)."""
    # Split into path segments; merge star runs that alternatives glued together.
    segments: list[list[_Node]] = [[]]
    for node in flat:
        if node == ("lit", "/"):
            segments.append([])
        elif node[0] == "star" and segments[-1] and segments[-1][-1][0] == "star":
            segments[-1][-1] = ("star", segments[-1][-1][1] + node[1])
        else:
            segments[-1].append(node)

    parts: list[t.Any] = []
    for seg in segments:
        if len(seg) == 1 and seg[0][0] == "star" and seg[0][1] >= 2:
            if parts and parts[-1] is _GLOBSTAR:
                continue  # "**/**" is "**"
            parts.append(_GLOBSTAR)
        else:
            parts.append("".join(_translate_node(n) for n in seg))

    if parts == [_GLOBSTAR]:
        return ".*"
    out = []
    for i, part in enumerate(parts):
        if part is _GLOBSTAR:
            # Zero or more whole segments, wherever it stands.
            out.append("(?:.*/)?" if i == 0 else "(?:/.*)?")
        else:
            if i > 0 and not (i == 1 and parts[0] is _GLOBSTAR):
                out.append("/")
            out.append(part)
    return "".join(out)


def _translate_node(node: _Node) -> str:
    kind = node[0]
    if kind == "lit":
        return re.escape(node[1])
    if kind == "star":  # glued to other text, "**" acts as "*"
        return "[^/]*"
    if kind == "any":
        return "[^/]"
    return node[1]  # class


class CompiledPattern:
    """A compiled pattern. ``match(text)`` is true when the pattern matches all of *text*."""

    __slots__ = ("pattern", "regex", "_fullmatch")

    def __init__(self, pattern: str, regex: str) -> None:
        self.pattern = pattern
        self.regex = re.compile(regex, re.DOTALL)
        self._fullmatch = self.regex.fullmatch

    def match(self, text: str) -> bool:
        """Whether the pattern matches the whole of *text*."""
        return self._fullmatch(text) is not None

    def __repr__(self) -> str:
        return f"CompiledPattern({self.pattern!r})"


_cache: dict[tuple[str, bool], CompiledPattern] = {}


def _compile(pattern: str, relative: bool) -> CompiledPattern:
    key = (pattern, relative)
    try:
        return _cache[key]
    except KeyError:
        pass
    if not isinstance(pattern, str):
        raise TypeError(f"a pattern is a str, not {type(pattern).__name__}")
    tree = _Parser(pattern).parse()
    flats = _expand(tree, pattern)
    if relative:
        # The console writes repository patterns with a leading "/", which is optional;
        # drop it from each alternative, so "{/a, /b}" is "{a,b}".
        flats = [_drop_root(flat) for flat in flats]
    if flats == [[]]:
        regex = ".*"  # the empty pattern matches all
    else:
        alternatives = list(dict.fromkeys(_translate(flat) for flat in flats))
        regex = alternatives[0] if len(alternatives) == 1 else "|".join(
            f"(?:{a})" for a in alternatives
        )
    compiled = CompiledPattern(pattern, regex)
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()
    _cache[key] = compiled
    return compiled


def _drop_root(flat: list[_Node]) -> list[_Node]:
    start = 0
    while start < len(flat) and flat[start] == ("lit", "/"):
        start += 1
    return flat[start:]


def compile_pattern(pattern: str) -> CompiledPattern:
    """Compile *pattern* as written, or raise PatternError; the result is cached.

    The empty pattern matches every string. A leading ``/`` is literal here: use
    :func:`repository_matches` for repository patterns, where it is optional.
    """
    return _compile(pattern, relative=False)


# repository_matches and tag_matches sit on the hot path of every rule and handler filter,
# so each keeps its own dict from the pattern as written to the regex's bound fullmatch.
_repo_fullmatch: dict[str, t.Callable[[str], t.Any]] = {}
_tag_fullmatch: dict[str, t.Callable[[str], t.Any]] = {}


def _remember(cache: dict[str, t.Callable[[str], t.Any]], pattern: str, relative: bool) -> t.Callable[[str], t.Any]:
    fullmatch = _compile(pattern, relative)._fullmatch
    if len(cache) >= CACHE_SIZE:
        cache.clear()
    cache[pattern] = fullmatch
    return fullmatch


def repository_fullmatch(pattern: str) -> t.Callable[[str], t.Any]:
    """The compiled repository *pattern*'s ``fullmatch``; raises PatternError if malformed."""
    return _repo_fullmatch.get(pattern) or _remember(_repo_fullmatch, pattern, relative=True)


def tag_fullmatch(pattern: str) -> t.Callable[[str], t.Any]:
    """The compiled tag *pattern*'s ``fullmatch``; raises PatternError if malformed."""
    return _tag_fullmatch.get(pattern) or _remember(_tag_fullmatch, pattern, relative=False)


def repository_matches(pattern: str, name: str) -> bool:
    """Whether the repository *pattern* matches *name*.

    :param pattern: as written in the registry's console: a leading ``/`` is optional and
        the empty pattern matches every repository.
    :param name: the repository name relative to its namespace, e.g. ``path1/app``.
    """
    try:
        return _repo_fullmatch[pattern](name) is not None
    except KeyError:
        return repository_fullmatch(pattern)(name) is not None


def tag_matches(pattern: str, tag: str) -> bool:
    """Whether the tag *pattern* matches *tag*; the empty pattern matches every tag."""
    try:
        return _tag_fullmatch[pattern](tag) is not None
    except KeyError:
        return tag_fullmatch(pattern)(tag) is not None
