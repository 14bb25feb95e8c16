"""The pattern language: docs/patterns.md's examples, its decisions, malformed patterns and
properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.core import matcher
from receiver.core.matcher import PatternError, compile_pattern, repository_matches, tag_matches

R = pytest.param

# docs/patterns.md's examples: (pattern, names that match, names that don't).
REPOSITORY_TABLE = [
    R("**", ["app", "a/b/c", "path1/x"], [], id="every-repository-globstar"),
    R("", ["app", "a/b/c"], [], id="every-repository-empty"),
    R("/path*", ["path", "pathx", "path-1.0"], ["pat", "xpath", "pathx/y", "path/y"], id="path-prefix"),
    R(
        "/{path1, path2}*",
        ["path1", "path1x", "path2-app"],
        ["path3", "path1/x", "path1x/y", "xpath1"],
        id="two-prefixes-first-level",
    ),
    R(
        "/{path1, path2}/**",
        ["path1/app", "path2/a/b", "path1"],
        ["path1x/app", "path3/app", "xpath1/app"],
        id="under-two-folders",
    ),
    R(
        "/{path1, path2}*/**",
        ["path1x", "path1x/y", "path2/a/b/c", "path1"],
        ["path3/app", "other/path1/app"],
        id="two-prefixes-any-depth",
    ),
]

TAG_TABLE = [
    R("1.?", ["1.0", "1.9", "1.x"], ["1.10", "2.0", "1.", "1/0"], id="every-1.x-tag"),
    R("{env1*, env2*}", ["env1", "env1-a", "env2.3"], ["env3", "xenv1", " env1"], id="env1-or-env2"),
    R("", ["v1", "latest", ""], [], id="empty-matches-every-tag"),
]

# Each decision under "Where the page is silent".
DECISIONS = [
    R("path*", ["pathx"], ["pathx/y"], id="leading-slash-optional"),
    R("/a/**", ["a", "a/b", "a/b/c"], ["ab", "b/a"], id="trailing-globstar-includes-itself"),
    R("/**/app", ["app", "x/app", "x/y/app"], ["app2", "x/app/y"], id="leading-globstar-zero-or-more"),
    R("/a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab"], id="middle-globstar"),
    R("/path**", ["path", "pathx"], ["pathx/y", "path/y"], id="glued-globstar-is-star"),
    R("/**path", ["path", "xpath"], ["x/path"], id="globstar-glued-before"),
    R("/{a,b{c,d}}", ["a", "bc", "bd"], ["b", "bcd", "ac"], id="nested-braces"),
    R("/{ a , b }", ["a", "b"], [" a", "a "], id="blanks-around-alternatives-ignored"),
    R("/a b", ["a b"], ["ab"], id="blank-outside-braces-literal"),
    R("/a.b+c(d)", ["a.b+c(d)"], ["axb+c(d)", "a.bbc(d)"], id="regex-metacharacters-literal"),
    R("/a,b", ["a,b"], ["a", "b"], id="comma-outside-braces-literal"),
    R("/App", ["App"], ["app", "APP"], id="case-sensitive"),
    R("/v[0-9]", ["v1", "v9"], ["va", "v10"], id="class-range"),
    R("/v[!0-9]", ["va"], ["v1", "v/"], id="class-negated-never-slash"),
    R("/a[/]b", [], ["a/b"], id="class-never-slash"),
    R("/{a/,b}**", ["a", "a/x/y", "b", "bx"], ["bx/y"], id="globstar-judged-after-expansion"),
    R("/{a,}x", ["ax", "x"], ["a"], id="empty-alternative"),
    R("/a/**/**", ["a", "a/b/c"], ["ab"], id="repeated-globstar"),
    R("/a?c", ["abc"], ["a/c", "ac"], id="question-never-slash"),
]


@pytest.mark.parametrize("pattern, yes, no", REPOSITORY_TABLE + DECISIONS)
def test_repository_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    """Each pattern matches exactly the names docs/patterns.md says it does."""
    for name in yes:
        assert repository_matches(pattern, name), (pattern, name)
    for name in no:
        assert not repository_matches(pattern, name), (pattern, name)


@pytest.mark.parametrize("pattern, yes, no", TAG_TABLE)
def test_tag_patterns(pattern: str, yes: list[str], no: list[str]) -> None:
    """Each tag pattern matches exactly the tags docs/patterns.md says it does."""
    for tag in yes:
        assert tag_matches(pattern, tag), (pattern, tag)
    for tag in no:
        assert not tag_matches(pattern, tag), (pattern, tag)


def test_tag_pattern_keeps_leading_slash_literal() -> None:
    """Only repository patterns drop the console's leading '/'."""
    assert not tag_matches("/v1", "v1")
    assert tag_matches("/v1", "/v1")


@pytest.mark.parametrize(
    "pattern, message",
    [
        R("/{a,b", "unclosed '{' at position 1 in '/{a,b'", id="unclosed-brace"),
        R("{a,{b}", "unclosed '{' at position 0 in '{a,{b}'", id="unclosed-outer-brace"),
        R("a}b", "unmatched '}' at position 1 in 'a}b'", id="stray-close-brace"),
        R("{a}}", "unmatched '}' at position 3 in '{a}}'", id="extra-close-brace"),
        R("v[0-9", "unclosed '[' at position 1 in 'v[0-9'", id="unclosed-class"),
        R("[z-a]", "reversed range 'z-a' at position 1 in '[z-a]'", id="reversed-range"),
        R("{a,b}" * 11, "too many alternatives (more than 1024)", id="too-many-alternatives"),
        R("{" * 500 + "a" + "}" * 500, "braces nested deeper than 16 at position 16", id="deep-nesting"),
    ],
)
def test_malformed_patterns(pattern: str, message: str) -> None:
    """A malformed pattern is refused at compile time with a message that says where."""
    with pytest.raises(PatternError) as info:
        compile_pattern(pattern)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_malformed_pattern_raises_from_the_match_functions_too() -> None:
    """The match functions compile first, so a bad pattern fails before any match."""
    with pytest.raises(PatternError):
        repository_matches("/{a", "a")
    with pytest.raises(PatternError):
        tag_matches("[a", "a")


def test_compiled_patterns_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pattern is compiled once, however often it is used."""
    calls = []
    real = matcher._Parser.parse

    def counting(self: matcher._Parser) -> list:
        calls.append(self.pattern)
        return real(self)

    monkeypatch.setattr(matcher._Parser, "parse", counting)
    pattern = "/cache-test-{x,y}*"
    for _ in range(3):
        assert repository_matches(pattern, "cache-test-x1")
        assert compile_pattern("/cache-test-{x,y}*").match("/cache-test-y")
    assert calls == [pattern, pattern]


def test_compiled_pattern_api() -> None:
    """compile_pattern returns an object whose match() is a bool over the whole text."""
    compiled = compile_pattern("a*")
    assert compiled.match("abc") is True
    assert compiled.match("xabc") is False
    assert "a*" in repr(compiled)


# --- properties -------------------------------------------------------------------------

segment = st.text(alphabet="abcxyz019-._", min_size=1, max_size=6)
names = st.lists(segment, min_size=1, max_size=4).map("/".join)
piece = st.sampled_from(["a", "b", "x", "-", ".", "1", "*", "?", "**", "/"])
patterns = st.lists(piece, max_size=8).map("".join)
# The empty pattern matching everything is a rule for a whole pattern; inside braces an
# empty alternative is the empty string ("{a,}x" matches "x"), so unions use non-empty ones.
alternatives = patterns.filter(lambda p: p.lstrip("/") != "")


@given(names)
def test_literal_name_matches_itself(name: str) -> None:
    """A name with no special characters, used as a pattern, matches itself."""
    assert repository_matches(name, name)
    assert repository_matches("/" + name, name)


@given(segment, segment, segment)
def test_star_and_question_never_cross_slash(a: str, b: str, c: str) -> None:
    """'*' and '?' stay inside one segment."""
    assert not repository_matches(f"{a}*", f"{a}{b}/{c}")
    assert not repository_matches(f"{a}?{c}", f"{a}/{c}")
    assert repository_matches(f"{a}*", f"{a}{b}")


@given(alternatives, alternatives, names)
def test_brace_is_union_of_alternatives(a: str, b: str, name: str) -> None:
    """'{a, b}' matches exactly what 'a' or 'b' matches."""
    union = repository_matches("{" + a + ", " + b + "}", name)
    assert union == (repository_matches(a, name) or repository_matches(b, name))


@given(patterns, names)
def test_adding_globstar_never_loses_a_match(pattern: str, name: str) -> None:
    """Whatever 'p' matches, 'p/**' matches too."""
    if repository_matches(pattern, name):
        assert repository_matches(pattern + "/**", name)
