"""The registry's pattern language for repositories and tags.

This module owns the whole language (see docs/patterns.md, "Syntax"); nothing else in the
package parses a pattern. It knows nothing of events, rules or HTTP.

A pattern is parsed once into a small tree, its ``{...}`` alternatives are expanded (so that
``**`` inside a brace is judged a whole segment exactly as doublestar judges it), and the
result is translated into one regular expression. Compiled patterns are cached.

Python's ``re`` backtracks, and some patterns (``v*.*.*``) make it take time polynomial in
the name, which arrives from the network. So the translation is examined
(:func:`_regex_is_linear`): when ``re`` can't go superlinear on it, ``re`` matches; otherwise
an automaton (:class:`_Automaton`) built from the tree itself, without expanding braces, does,
in time proportional to the name's length times the pattern's. Both match the same strings.
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
        p = self.pattern
        seq: _Seq = []
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


def _translate(flat: list[_Node]) -> list[str]:
    """One brace-free sequence as a regular expression, one atom a string (unanchored)."""
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
            parts.append([_translate_node(n) for n in seg])

    if parts == [_GLOBSTAR]:
        return [".*"]
    out: list[str] = []
    for i, part in enumerate(parts):
        if part is _GLOBSTAR:
            # Zero or more whole segments, wherever it stands.
            out.append("(?:.*/)?" if i == 0 else "(?:/.*)?")
        else:
            if i > 0 and not (i == 1 and parts[0] is _GLOBSTAR):
                out.append("/")
            out.extend(part)
    return out


def _translate_node(node: _Node) -> str:
    kind = node[0]
    if kind == "lit":
        return re.escape(node[1])
    if kind == "star":  # glued to other text, "**" acts as "*"
        return "[^/]*"
    if kind == "any":
        return "[^/]"
    return node[1]  # class


# --- choosing the engine -------------------------------------------------------------------
#
# sre, Python's regex engine, backtracks: an unbounded atom takes all it can, then gives back
# one character at a time and retries what follows. A translation is a list of alternatives,
# each a row of atoms:
#   fixed    one character, never "/": a literal, "[^/]" for "?", a class
#   "/"      the separator
#   loop     "[^/]*", a "*"; it can't cross a "/"
#   head     "(?:.*/)?", a leading "**"; always the first atom
#   middle   "(?:/.*)?", a later "**"
#   all      ".*", a "**" standing alone
# re matches only when, in every alternative, by these rules, it cannot go superlinear:
# 1. A middle or all that ends the alternative costs O(1) each time it is reached (sre's ".*"
#    jumps to the end, where the end matches at once), so it is set aside.
# 2. Every loop is *pinned*: after it come fixed atoms and then a "/", a middle or the end.
#    Neither the loop nor those atoms can match "/", so one length of the loop only (the one
#    stopping at the first "/" or the end) lets the match go past the pin: what follows is
#    reached once each time the loop is. Two loops in one segment ("*.*") aren't pinned, and
#    cost O(n^2) and worse.
# 3. A head, or a middle not at the end, may end before any later "/", so what follows it is
#    reached O(n) times: no middle but a final one (1) may follow it ("**/a/**/b" is O(n^2)).
#    Loops may: they are pinned, and each reads just the segment after the "/" the globstar
#    stopped at (or one a fixed number of "/" further on), so all their scans together read
#    the name a bounded number of times.
# Each unbounded atom then reads the name once and, giving back, retries the fixed atoms up to
# the next unbounded atom; the sum of these over all alternatives, in steps per character, must
# stay within _RE_STEPS_PER_CHAR, or a pattern's 1024 alternatives could cost 1024 passes.
# When in doubt, the automaton.

#: The most sre steps per character of the name a pattern may cost (see above) for re to match;
#: a step takes about a nanosecond, so 100 kB cost re at most some 7 ms.
_RE_STEPS_PER_CHAR = 64

_LOOP, _HEAD, _MIDDLE, _ALL = "[^/]*", "(?:.*/)?", "(?:/.*)?", ".*"
_UNBOUNDED = frozenset((_LOOP, _HEAD, _MIDDLE, _ALL))


def _regex_is_linear(alternatives: t.Sequence[t.Sequence[str]]) -> bool:
    """Whether re matches these alternatives (lists of atoms) in linear time; see above."""
    steps = 0
    for atoms in alternatives:
        cost = _steps_per_char(atoms)
        if cost is None:
            return False
        steps += cost
    return steps <= _RE_STEPS_PER_CHAR


def _steps_per_char(atoms: t.Sequence[str]) -> int | None:
    """The worst sre steps per character one alternative costs, or None if superlinear."""
    body = atoms[:-1] if atoms and atoms[-1] in (_MIDDLE, _ALL) else atoms  # rule 1
    loops = [i for i, atom in enumerate(body) if atom in _UNBOUNDED]
    steps = 0
    for n, i in enumerate(loops):
        later = [body[j] for j in loops[n + 1 :]]
        after = body[i + 1 : loops[n + 1] if later else len(body)]
        if body[i] == _LOOP:  # rule 2
            linear = "/" in after or not later or later[0] == _MIDDLE
        else:  # a head or a middle, rule 3
            linear = _MIDDLE not in later
        if not linear:
            return None
        steps += 2 + len(after)
    return steps


# --- the automaton -------------------------------------------------------------------------
#
# The tree is translated without expanding its braces: it is laid out as a program (a node
# is an instruction; "{...}" becomes a split and jumps), and a small state machine follows
# _translate along it, emitting the same atoms. Each (instruction, translation state) pair
# is one state of a Thompson NFA, so the NFA is a constant times the pattern's length however
# many alternatives the braces stand for. The NFA is run as a DFA built lazily, one set of
# NFA states at a time, and cached: each character costs a dict look-up once warm, and one
# step of the NFA (a few operations on ints as wide as the NFA) when not.

# Atoms beyond the nodes that read one character ("lit", "any", "class"):
_A_LOOP, _A_HEAD, _A_MIDDLE, _A_ALL = ("loop",), ("head",), ("middle",), ("all",)
_SEP: _Node = ("lit", "/")
_EVERY: _Node = ("every",)  # reads any character at all, as "." does under re.DOTALL
_NOT_SEP: _Node = ("any",)

# The translation state: (dropping leading "/"s, the parts so far, the segment so far).
_NO_PART, _HEAD_PART, _GLOBSTAR_PART, _TEXT_PART = range(4)
_EMPTY, _ONE_STAR, _STARS, _TEXT = range(4)
_BEFORE_TEXT = {_NO_PART: (), _HEAD_PART: (_A_HEAD,), _GLOBSTAR_PART: (_SEP,), _TEXT_PART: (_SEP,)}
_STARS_SO_FAR = {_EMPTY: (), _ONE_STAR: (_A_LOOP,), _STARS: (_A_LOOP,)}

_State = tuple[bool, int, int]


def _feed(state: _State, node: _Node) -> tuple[tuple[_Node, ...], _State]:
    """The atoms one more node adds to the translation, and the state after it."""
    root, part, seg = state
    if node == _SEP:
        if root:  # _drop_root
            return (), state
        atoms, part = _close(part, seg)
        return atoms, (False, part, _EMPTY)
    if node[0] == "star":
        if seg == _TEXT:
            return (_A_LOOP,), (False, part, _TEXT)
        return (), (False, part, _ONE_STAR if seg == _EMPTY and node[1] == 1 else _STARS)
    if seg == _TEXT:
        return (node,), state
    return _BEFORE_TEXT[part] + _STARS_SO_FAR[seg] + (node,), (False, _TEXT_PART, _TEXT)


def _close(part: int, seg: int) -> tuple[tuple[_Node, ...], int]:
    """The atoms a finished segment adds, and the parts state after it."""
    if seg == _TEXT:
        return (), part
    if seg == _STARS:  # a globstar
        if part == _NO_PART:
            return (), _HEAD_PART
        if part == _TEXT_PART:
            return (_A_MIDDLE,), _GLOBSTAR_PART
        return (), part  # "**/**" is "**"
    return _BEFORE_TEXT[part] + _STARS_SO_FAR[seg], _TEXT_PART


def _finish(state: _State) -> tuple[_Node, ...]:
    """The atoms the end of the pattern adds."""
    atoms, part = _close(state[1], state[2])
    return (*atoms, _A_ALL) if part == _HEAD_PART else atoms  # "**" alone is ".*"


def _program(seq: _Seq, code: list[t.Any]) -> list[t.Any]:
    """Lay *seq* out as instructions: its nodes, and ("split", starts) / ("jump", to) for braces."""
    for node in seq:
        if node[0] != "alt":
            code.append(node)
            continue
        split, starts, jumps = len(code), [], []
        code.append(None)
        for alt in node[1]:
            starts.append(len(code))
            _program(alt, code)
            jumps.append(len(code))
            code.append(None)
        code[split] = ("split", tuple(starts))
        for jump in jumps:
            code[jump] = ("jump", len(code))
    return code


class _NFA:
    """A Thompson NFA: each state reads one character or has only epsilon moves."""

    def __init__(self) -> None:
        self.eps: list[list[int]] = []
        self.reads: list[tuple[_Node, int] | None] = []  # (test, the state after)

    def new(self, test: _Node | None = None, then: int = -1) -> int:
        self.eps.append([])
        self.reads.append(None if test is None else (test, then))
        return len(self.eps) - 1

    def chain(self, u: int, atoms: t.Iterable[_Node]) -> int:
        """Add *atoms* after state *u*; the state after them."""
        for atom in atoms:
            u = self.atom(u, atom)
        return u

    def atom(self, u: int, atom: _Node) -> int:
        v, kind = self.new(), atom[0]
        if kind in ("loop", "all"):  # [^/]*  .*
            self.eps[u].append(v)
            self.eps[v].append(self.new(_NOT_SEP if kind == "loop" else _EVERY, v))
        elif kind == "head":  # (?:.*/)?
            w = self.new()
            self.eps[u] += [w, v]
            self.eps[w] += [self.new(_EVERY, w), self.new(_SEP, v)]
        elif kind == "middle":  # (?:/.*)?
            w = self.new()
            self.eps[u] += [self.new(_SEP, w), v]
            self.eps[w] += [self.new(_EVERY, w), v]
        else:
            self.eps[u].append(self.new(atom, v))
        return v

    def closures(self, bits: dict[int, int]) -> list[int]:
        """For each state, the union of the *bits* of the states its epsilon moves reach."""
        done: list[int | None] = [None] * len(self.eps)
        for root in range(len(self.eps)):
            stack = [root]
            while stack:  # depth first, post-order; the epsilon moves have no cycle
                s = stack[-1]
                if done[s] is not None:
                    stack.pop()
                    continue
                todo = [e for e in self.eps[s] if done[e] is None]
                if todo:
                    stack += todo
                    continue
                mask = bits.get(s, 0)
                for e in self.eps[s]:
                    mask |= done[e]  # type: ignore[operator]
                done[s] = mask
                stack.pop()
        return done  # type: ignore[return-value]


def _thompson(tree: _Seq, relative: bool) -> tuple[_NFA, int, int]:
    """The NFA of the tree, its start state and its accepting state (see the comment above)."""
    code = [*_program(tree, []), ("end",)]
    nfa = _NFA()
    ids: dict[tuple[int, _State], int] = {}
    todo: list[tuple[int, _State]] = []

    def at(pc: int, state: _State) -> int:
        if (pc, state) not in ids:
            ids[pc, state] = nfa.new()
            todo.append((pc, state))
        return ids[pc, state]

    start, accept = at(0, (relative, _NO_PART, _EMPTY)), nfa.new()
    while todo:
        pc, state = todo.pop()
        u, op = ids[pc, state], code[pc]
        if op[0] == "split":
            nfa.eps[u] += [at(first, state) for first in op[1]]
        elif op[0] == "jump":
            nfa.eps[u].append(at(op[1], state))
        elif op[0] == "end":
            nfa.eps[nfa.chain(u, _finish(state))].append(accept)
        else:
            atoms, after = _feed(state, op)
            v = nfa.chain(u, atoms)
            nfa.eps[v].append(at(pc + 1, after))
    return nfa, start, accept


#: How many states and transitions one automaton caches before it starts again.
_DFA_BUDGET = 1 << 15


class _Automaton:
    """Matches what the pattern's regex matches, in time linear in the name.

    The NFA's reading states are bits 0 to k-1 of an int, in the order they were made, and
    bit k is its accepting state. One step is ``follow(active & reading(c))``. Most reading
    states are followed by just the next one (a run of literals and ``?``), so ``follow``
    is a shift for those and a look-up for the few others (loops, the ends of braces,
    globstars). Each set of active states met becomes a DFA state, a dict from a character to
    the next, so that once warm a character costs one dict look-up.

    :param tree: the parsed pattern.
    :param relative: drop leading ``/``, as repository patterns do.
    """

    def __init__(self, tree: _Seq, relative: bool) -> None:
        nfa, start, accept = _thompson(tree, relative)
        readers = [s for s, read in enumerate(nfa.reads) if read is not None]
        bits = {s: 1 << i for i, s in enumerate(readers)}
        bits[accept] = self._accept = 1 << len(readers)
        closure = nfa.closures(bits)
        self._follow = [closure[nfa.reads[s][1]] for s in readers]  # type: ignore[index]
        self._plain = 0
        for i, follow in enumerate(self._follow):
            if follow == 1 << (i + 1):
                self._plain |= 1 << i
        self._by_test: dict[_Node, int] = {}
        for s in readers:
            test = nfa.reads[s][0]  # type: ignore[index]
            self._by_test[test] = self._by_test.get(test, 0) | bits[s]
        self._lits = {test[1] for test in self._by_test if test[0] == "lit"} | {"/"}
        self._classes = {
            test[1]: re.compile(test[1], re.DOTALL).match
            for test in self._by_test if test[0] == "class"
        }
        self._start_active = closure[start]
        self._reset()

    def _reset(self) -> None:
        self._states: dict[int, dict[t.Any, t.Any]] = {}
        self._by_key: dict[t.Any, int] = {}
        self._cached = 0
        self._start = self._state(self._start_active)

    def _state(self, active: int) -> dict[t.Any, t.Any]:
        """The DFA state for the set *active*: a dict from character to the next state."""
        found = self._states.get(active)
        if found is None:
            found = self._states[active] = {None: active}
            self._cached += 1
        return found

    def _reads(self, test: _Node, c: str) -> bool:
        kind = test[0]
        if kind == "lit":
            return c == test[1]
        if kind == "any":
            return c != "/"
        if kind == "every":
            return True
        return self._classes[test[1]](c) is not None

    def _key(self, c: str) -> t.Any:
        """What tells *c* apart for the tests: itself if some literal is, else its classes."""
        if c in self._lits:
            return c
        if self._classes:
            return tuple(match(c) is not None for match in self._classes.values())
        return ""  # never a character: keys and characters share a state's dict

    def _reading(self, key: t.Any, c: str) -> int:
        """The reading states that accept *c*, whose key is *key*."""
        mask = self._by_key.get(key)
        if mask is None:
            mask = 0
            for test, readers in self._by_test.items():
                if self._reads(test, c):
                    mask |= readers
            self._by_key[key] = mask
            self._cached += 1
        return mask

    def _step(self, active: int, reading: int) -> int:
        """The states active after a character that the states in *reading* accept."""
        live = active & reading
        after = (live & self._plain) << 1
        live &= ~self._plain
        while live:
            low = live & -live
            live ^= low
            after |= self._follow[low.bit_length() - 1]
        return after

    def _miss(self, state: dict[t.Any, t.Any], c: str) -> dict[t.Any, t.Any] | None:
        """The state after *state* reads *c*, when *state* has not cached it; None if dead."""
        key = self._key(c)
        after = state.get(key)
        if after is None:
            active = self._step(state[None], self._reading(key, c))
            if not active:
                return None
            after = self._state(active)
            state[key] = after
        self._cached += 1
        if self._cached > _DFA_BUDGET:
            self._reset()
        else:
            state[c] = after
        return after

    def fullmatch(self, text: str) -> bool | None:
        """True if the pattern matches all of *text*, else None (as ``re``'s fullmatch)."""
        state = self._start
        for c in text:
            after = state.get(c)
            if after is None:
                after = self._miss(state, c)
                if after is None:
                    return None
            state = after
        return True if state[None] & self._accept else None


class CompiledPattern:
    """A compiled pattern. ``match(text)`` is true when the pattern matches all of *text*.

    ``regex`` is the pattern as a regular expression; ``engine`` says what matches:
    ``"re"``, or ``"automaton"`` when ``re`` could take more than linear time on it.
    """

    __slots__ = ("_fullmatch", "engine", "pattern", "regex")

    def __init__(self, pattern: str, regex: str, automaton: _Automaton | None = None) -> None:
        self.pattern = pattern
        self.regex = re.compile(regex, re.DOTALL)
        self.engine = "re" if automaton is None else "automaton"
        self._fullmatch = self.regex.fullmatch if automaton is None else automaton.fullmatch

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
    tree, flats = _parse(pattern, relative)
    alternatives = list(dict.fromkeys(tuple(_translate(flat)) for flat in flats))
    regexes = ["".join(atoms) for atoms in alternatives]
    regex = regexes[0] if len(regexes) == 1 else "|".join(f"(?:{a})" for a in regexes)
    automaton = None if _regex_is_linear(alternatives) else _Automaton(tree, relative)
    compiled = CompiledPattern(pattern, regex, automaton)
    if len(_cache) >= CACHE_SIZE:
        _cache.clear()
    _cache[key] = compiled
    return compiled


def _parse(pattern: str, relative: bool) -> tuple[_Seq, list[list[_Node]]]:
    """The tree of *pattern* and its expansions; raises PatternError if it is malformed."""
    if not isinstance(pattern, str):
        raise TypeError(f"a pattern is a str, not {type(pattern).__name__}")
    tree = _Parser(pattern).parse()
    flats = _expand(tree, pattern)
    if relative:
        # The console writes repository patterns with a leading "/", which is optional;
        # drop it from each alternative, so "{/a, /b}" is "{a,b}".
        flats = [_drop_root(flat) for flat in flats]
    if flats == [[]]:  # the empty pattern matches all, as "**" does
        tree = [("star", 2)]
        flats = [tree]
    return tree, flats


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
# so each keeps its own dict from the pattern as written to the bound fullmatch (of the regex,
# or of the automaton).
_repo_fullmatch: dict[str, t.Callable[[str], t.Any]] = {}
_tag_fullmatch: dict[str, t.Callable[[str], t.Any]] = {}


def _remember(
    cache: dict[str, t.Callable[[str], t.Any]], pattern: str, relative: bool
) -> t.Callable[[str], t.Any]:
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
