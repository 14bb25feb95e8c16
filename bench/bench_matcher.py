"""Benchmark the pattern matcher against a hand-compiled regex and wcmatch, in one run.

Run:  pip install -e '.[bench]' && python bench/bench_matcher.py
Prints nanoseconds per match for each and the ratios; the target is at most 1.5x the
hand-compiled regex. Then the time to test one name against 10,000 distinct patterns, and
last the patterns re would backtrack on, which the linear automaton matches: per match on a
usual tag, and on a hostile 100 kB one (the hand-compiled regex gets a 1 kB one).
"""

from __future__ import annotations

import re
import sys
import timeit

from receiver.core.matcher import compile_pattern, repository_matches, tag_matches

# (console pattern, a name it matches, what a person would write by hand for it)
CASES = [
    ("/{path1, path2}*/**", "path2-service/backend/api", r"(?:path1|path2)[^/]*(?:/.*)?"),
    ("/path*", "path-frontend", r"path[^/]*"),
]


# (tag pattern, a usual tag, a hostile tag of n characters, the regex a person would write)
BACKTRACKING = [
    ("v*.*.*", "v1.22.333", lambda n: "v" + "." * n + "/", r"v[^/]*\.[^/]*\.[^/]*"),
    ("*-{alpha,beta}*", "release-beta2", lambda n: "-beta" * (n // 5) + "/",
     r"[^/]*-(?:alpha|beta)[^/]*"),
    ("**/a/**/x", "q/a/b/x", lambda n: "a/" * (n // 2), r"(?:.*/)?a(?:/.*)?/x"),
]


def best_ns(stmt, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e9


def bench_one(pattern: str, name: str, hand_regex: str) -> None:
    fullmatch = re.compile(hand_regex, re.DOTALL).fullmatch
    assert repository_matches(pattern, name) and fullmatch(name)
    n = 200_000
    hand = best_ns(lambda: fullmatch(name) is not None, n)
    ours = best_ns(lambda: repository_matches(pattern, name), n)
    print(f"pattern {pattern!r}, name {name!r}")
    print(f"  hand-compiled regex   {hand:8.0f} ns/match")
    print(f"  repository_matches    {ours:8.0f} ns/match   ratio {ours / hand:.2f}x "
          "(target <= 1.5x)")
    try:
        from wcmatch import glob
    except ImportError:
        print("  wcmatch               not installed (pip install -e '.[bench]')")
        return
    flags = glob.GLOBSTAR | glob.BRACE
    wc_pattern = pattern.lstrip("/").replace(", ", ",")
    assert glob.globmatch(name, wc_pattern, flags=flags)
    wc = best_ns(lambda: glob.globmatch(name, wc_pattern, flags=flags), n // 20)
    print(f"  wcmatch.globmatch     {wc:8.0f} ns/match   ratio {wc / hand:.2f}x of hand-compiled")


def main() -> int:
    for case in CASES:
        bench_one(*case)

    patterns = [f"/team{i}/{{app, svc}}*/**" for i in range(10_000)]
    target = "team9999/app-frontend/web"
    t_compile = timeit.timeit(lambda: [compile_pattern(p.lstrip("/")) for p in patterns], number=1)
    for p in patterns:
        repository_matches(p, target)
    hits = sum(repository_matches(p, target) for p in patterns)
    per_name = min(
        timeit.repeat(lambda: [repository_matches(p, target) for p in patterns], number=5, repeat=5)
    ) / 5
    hand_rx = [re.compile(rf"team{i}/(?:app|svc)[^/]*(?:/.*)?", re.DOTALL).fullmatch
               for i in range(10_000)]
    hand_per_name = min(
        timeit.repeat(lambda: [fm(target) is not None for fm in hand_rx], number=5, repeat=5)
    ) / 5
    print(f"10,000 distinct patterns: first compile {t_compile * 1e3:.0f} ms in all")
    print(f"  one name against all 10,000: {per_name * 1e3:.2f} ms ({hits} match); "
          f"hand-compiled regexes {hand_per_name * 1e3:.2f} ms; "
          f"ratio {per_name / hand_per_name:.2f}x")

    for pattern, tag, hostile, hand_regex in BACKTRACKING:
        bench_backtracking(pattern, tag, hostile, hand_regex)
    return 0


def bench_backtracking(pattern: str, tag: str, hostile, hand_regex: str) -> None:
    fullmatch = re.compile(hand_regex, re.DOTALL).fullmatch
    assert tag_matches(pattern, tag) and fullmatch(tag)
    hand = best_ns(lambda: fullmatch(tag) is not None, 100_000)
    ours = best_ns(lambda: tag_matches(pattern, tag), 100_000)
    big, small = hostile(100_000), hostile(1_000)
    assert tag_matches(pattern, big) is (fullmatch(small) is not None) is False
    ours_big = best_ns(lambda: tag_matches(pattern, big), 1, repeat=3) / 1e6
    hand_small = best_ns(lambda: fullmatch(small), 1, repeat=1) / 1e6
    print(f"pattern {pattern!r} ({compile_pattern(pattern).engine}), tag {tag!r}")
    print(f"  hand-compiled regex   {hand:8.0f} ns/match")
    print(f"  tag_matches           {ours:8.0f} ns/match   ratio {ours / hand:.2f}x")
    print(f"  hostile tag: tag_matches {ours_big:.1f} ms on 100 kB; "
          f"hand-compiled regex {hand_small:.1f} ms on 1 kB")


if __name__ == "__main__":
    sys.exit(main())
