"""Matching in linear time: the automaton agrees with re, and hostile names finish quickly."""

from __future__ import annotations

import itertools
import random
import re
import subprocess
import sys
import textwrap
import typing as t
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from receiver.core import matcher
from receiver.core.matcher import PatternError, compile_pattern, repository_fullmatch, tag_fullmatch

ROOT = Path(__file__).resolve().parent.parent
R = pytest.param

#: Generous: each of these takes milliseconds; before the automaton they took minutes.
DEADLINE = 5.0

# --- the two engines agree -------------------------------------------------------------------

TOKENS = ["a", "b", "x", "0", ".", "-", "/", "*", "**", "?"]
TOKENS += ["[a-z]", "[!0-9]", "[.a]", "[^/]", "[/]"]
# Braces that glue stars together, as "{*,a}*" does, are rare by chance: make them common.
GLUE = ["{*,a}", "{a,*}*", "*{*,a}", "{*,a}{*,b}", "{**,a/}", "{/**,*}"]
ATOMS = [token for token in TOKENS if token != "/"] + GLUE
atom = st.sampled_from(ATOMS)


def _braces(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    comma = st.sampled_from([",", ", ", " ,"])
    return st.tuples(st.lists(inner, min_size=1, max_size=3), comma).map(
        lambda alts_comma: "{" + alts_comma[1].join(alts_comma[0]) + "}"
    )


def _path(segment: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Segments (often a lone globstar) joined by '/', sometimes with a leading '/'."""
    segments = st.lists(st.one_of(st.just("**"), segment), max_size=4)
    leads = st.sampled_from(["", "/"])
    return st.tuples(leads, segments).map(lambda lead: lead[0] + "/".join(lead[1]))


small_patterns = _path(st.lists(atom, max_size=3).map("".join))
patterns = st.one_of(
    small_patterns,
    st.recursive(
        small_patterns,
        lambda inner: _path(st.lists(st.one_of(atom, _braces(inner)), max_size=3).map("".join)),
        max_leaves=8,
    ),
)
ALPHABET = "abx0.-/z9é\n"
plain_names = st.one_of(
    st.text(alphabet=ALPHABET, max_size=12),
    st.lists(st.text(alphabet="abx0.", max_size=3), max_size=4).map("/".join),
)


#: Every name of up to three characters from a few that matter: small, but they catch a lot.
SHORT_NAMES = ["".join(chars) for n in range(4) for chars in itertools.product("ab/.", repeat=n)]


Fullmatch = t.Callable[[str], t.Any]


def _engines(pattern: str, relative: bool) -> tuple[Fullmatch, Fullmatch]:
    """The pattern's re fullmatch and its automaton's, whichever would match it."""
    automaton = matcher._Automaton(matcher._parse(pattern, relative)[0], relative)
    return matcher._compile(pattern, relative).regex.fullmatch, automaton.fullmatch


def _names_matching(regex: str) -> st.SearchStrategy[str]:
    """Names the regex (nearly) matches: hypothesis can't draw from a lookahead, so drop it."""
    return st.from_regex(
        re.compile(regex.replace("(?!/)", ""), re.DOTALL), fullmatch=True, alphabet=ALPHABET
    )


def _near_misses(regex: str) -> st.SearchStrategy[str]:
    """Names one edit away from a name the regex matches: the most telling ones."""

    def edit(args: tuple[str, int, str, int]) -> str:
        name, at, char, how = args
        at %= len(name) + 1
        return name[:at] + char * (how != 0) + name[at + (how != 1) :]

    chars = st.sampled_from("//" + ALPHABET)  # "/" most often: it is what "*" and "?" refuse
    return st.tuples(_names_matching(regex), st.integers(0, 30), chars, st.integers(0, 2)).map(edit)


def _agree(pattern: str, relative: bool, names: list[str]) -> None:
    by_re, by_automaton = _engines(pattern, relative)
    for name in names:
        assert (by_re(name) is not None) == (by_automaton(name) is not None), (pattern, name)


@settings(max_examples=500, deadline=None)
@given(patterns, st.booleans(), st.data())
def test_automaton_agrees_with_re(pattern: str, relative: bool, data: st.DataObject) -> None:
    """On any pattern and name, the automaton matches exactly when the re translation does."""
    try:
        flats = matcher._parse(pattern, relative)[1]
    except PatternError:
        assume(False)
    # One alternative at a time keeps drawing names from the regex quick.
    regex = "".join(matcher._translate(data.draw(st.sampled_from(flats))))
    names = data.draw(
        st.lists(st.one_of(plain_names, _names_matching(regex), _near_misses(regex)), max_size=8)
    )
    _agree(pattern, relative, names + SHORT_NAMES)


@pytest.mark.parametrize(
    "pattern",
    ["**/**/b", "a/**/**", "**/", "/**", "//a", "{/,a}", "{*,a}*", "*{*,a}/b", "{**,a/}b",
     "{/**,*}", "a/{**/,}b", "{a,b{c,d}}", "[!a]?", "[/]", "{,}", "{ }", "/"],
)
@pytest.mark.parametrize("relative", [False, True], ids=["tag", "repository"])
def test_automaton_agrees_with_re_on_every_short_name(pattern: str, relative: bool) -> None:
    """On patterns at the corners of the language, both engines agree on every short name."""
    names = ["".join(chars) for n in range(6) for chars in itertools.product("ab/", repeat=n)]
    _agree(pattern, relative, names)


@given(patterns, st.lists(plain_names, max_size=8))
def test_automaton_agrees_with_re_while_its_cache_starts_again(
    pattern: str, names: list[str]
) -> None:
    """Answers stay the same when the automaton's cache fills up and is emptied mid-match."""
    try:
        compile_pattern(pattern)
    except PatternError:
        assume(False)
    budget = matcher._DFA_BUDGET
    matcher._DFA_BUDGET = 3
    try:
        _agree(pattern, False, names)
    finally:
        matcher._DFA_BUDGET = budget


@pytest.mark.parametrize(
    "pattern, name",
    [
        R("v*.*.*", "v1.2.3", id="stars"),
        R("{*a,*b}*c", "xbyc", id="starred-alternatives"),
        R("**/a/**/b/**/x", "a/b/x", id="globstars"),
        R("[!0-9]*[a-z]*x", "éaxx", id="classes-and-other-characters"),
        R("{**,x}*/a", "q/r/a", id="globstar-made-by-braces"),
    ],
)
def test_fullmatch_contract(pattern: str, name: str) -> None:
    """repository_fullmatch and tag_fullmatch give None for no match and not None for a match."""
    for fullmatch in (repository_fullmatch(pattern), tag_fullmatch(pattern)):
        assert fullmatch(name) is not None
        assert fullmatch(name + "/") is None
        assert fullmatch("") is None


# --- which engine ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["", "**", "/path*", "/{path1, path2}*", "/{path1, path2}/**", "/{path1, path2}*/**",
     "1.?", "{env1*, env2*}", "v*", "/**/app", "/a/**/b", "/**/a/**", "*/*/*", "v[0-9]*",
     "/team1/{app, svc}*/**", "/a/**/*b", "/a/**/b/**"],
)
def test_common_patterns_stay_with_re(pattern: str) -> None:
    """Patterns that can't make re backtrack badly are matched by re, as fast as before."""
    assert compile_pattern(pattern).engine == "re"


@pytest.mark.parametrize(
    "pattern",
    ["v*.*.*", "*a*", "{*a,*b}*c", "**/a/**/b/**/x", "**/a/**/x", "a/**/b/**/c", "a/**/b/*x*",
     "*" + "{a,b}" * 10, "{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}*"],
)
def test_backtracking_patterns_use_the_automaton(pattern: str) -> None:
    """Patterns on which re could take more than linear time are matched by the automaton."""
    assert compile_pattern(pattern).engine == "automaton"


def test_automaton_is_the_size_of_the_pattern_not_of_its_expansion() -> None:
    """Braces multiply a pattern's alternatives, but its automaton grows with its length."""
    pattern = "*" + "{a,b}" * 10  # 1024 alternatives
    automaton = matcher._Automaton(matcher._parse(pattern, False)[0], False)
    assert len(automaton._follow) < 2 * len(pattern)  # one reading state per character, about


# --- hostile names ------------------------------------------------------------------------------

HUGE = 100_000


def _finishes(code: str) -> str:
    """Run *code* in a fresh interpreter within DEADLINE seconds and return what it printed."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True, text=True, timeout=DEADLINE, cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"took more than {DEADLINE} s")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    "kind, pattern, name, expected",
    [
        R("tag", "v*.*.*", f'"v" + "." * {HUGE} + "/"', False, id="issue-example"),
        R("tag", "v*.*.*", f'"v" + "." * {HUGE}', True, id="issue-example-matching"),
        R("repository", "**/**/**/x", f'"a/" * {HUGE // 2}', False, id="globstars-collapsed"),
        R("repository", "**/a/**/b/**/x", f'"a/b/" * {HUGE // 4}', False, id="globstars"),
        R("tag", "{*a,*b}*c", f'"a" * {HUGE}', False, id="starred-alternatives"),
        R("tag", "*a*", f'"a" * {HUGE} + "/"', False, id="contains"),
        R("tag", "*" + "{a,b}" * 10, f'"ab" * {HUGE // 2} + "c"', False, id="1024-alternatives"),
        R("tag", "v*.*.*", f'"v" + "".join(map(chr, range(0x4E00, 0x4E00 + {HUGE})))', False,
          id="every-character-different"),
        R("tag", "[!0-9]*.*[a-z]", f'"x" + "." * {HUGE} + "0"', False, id="classes"),
        R("repository", "/{path1, path2}*/**", f'"path1" + "x" * {HUGE} + "/y"', True,
          id="re-bench"),
        R("repository", "/**/a/**", f'"a/" * {HUGE // 2} + "b"', True, id="re-globstars"),
    ],
)
def test_hostile_names_finish_quickly(kind: str, pattern: str, name: str, expected: bool) -> None:
    """A 100 kB name is matched in well under the deadline, whatever the pattern."""
    out = _finishes(f"""
        from receiver.core.matcher import _compile, {kind}_matches, {kind}_fullmatch
        name, pattern = {name}, {pattern!r}
        print({kind}_matches(pattern, name), {kind}_fullmatch(pattern)(name) is not None,
              _compile(pattern, relative={kind == "repository"}).match(name))
    """)
    assert out.split() == [str(expected)] * 3


def test_cli_match_finishes_quickly() -> None:
    """`receiver match` answers the issue's example on a 100 kB tag within the deadline."""
    name = "v" + "." * HUGE + "/"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "receiver", "match", "--tag", "v*.*.*", name],
            capture_output=True, text=True, timeout=DEADLINE, cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"took more than {DEADLINE} s")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{name} no match\n"


SMALL_ATOMS = ["a", "b", "*", "?", "[a-z]", "{*,a}", "{a,b}*", "{**,a/}"]


def _small_pattern(rng: random.Random) -> str:
    """A random short path pattern over few characters, so hostile names can line up with it."""
    segments = []
    for _ in range(rng.randint(1, 5)):
        atoms = rng.choices(SMALL_ATOMS, k=rng.randint(1, 3))
        segments.append("**" if rng.random() < 0.35 else "".join(atoms))
    return "/".join(segments)


def _hostile_names(size: int) -> list[str]:
    """Long names of one repeated unit, that end in ways that make a match fail late."""
    units = ["a", "b", "a/", "b/", "aa/", "ab/", "a/b/", "b/a/", "/"]
    return [unit * (size // len(unit)) + end for unit in units for end in ("", "/", "!", "b", "/b")]


def test_patterns_left_to_re_finish_quickly_on_hostile_names() -> None:
    """Every random pattern the rule leaves to re matches long hostile names without delay."""
    out = _finishes(f"""
        import random
        from receiver.core.matcher import compile_pattern
        from tests.test_matcher_linear import _hostile_names, _small_pattern
        rng, seen, names = random.Random(20240601), set(), _hostile_names({HUGE // 4})
        while len(seen) < 150:
            compiled = compile_pattern(_small_pattern(rng))
            if compiled.engine == "re" and compiled.regex.pattern not in seen:
                seen.add(compiled.regex.pattern)
                for name in names:
                    compiled.match(name)
        print(len(seen))
    """)
    assert out.split() == ["150"]
