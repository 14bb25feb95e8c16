"""``receiver match``: try a repository or tag pattern on names."""

from __future__ import annotations

import click

from ..core.matcher import PatternError, repository_fullmatch, tag_fullmatch
from .common import UserError, emit_json


@click.command()
@click.option("--repository", "repository", metavar="PATTERN", help="A repository pattern.")
@click.option("--tag", "tag", metavar="PATTERN", help="A tag pattern.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("names", nargs=-1, required=True)
def match(repository: str | None, tag: str | None, as_json: bool, names: tuple[str, ...]) -> None:
    """Test NAMES against a repository or tag pattern, as a trigger rule would.

    Repository names are relative to the namespace (`path1/app` in `public`); a leading
    `/` in the pattern is optional and an empty pattern matches everything.

    \b
      receiver match --repository '/{path1, path2}*/**' path1x/app other/app
      receiver match --tag '{env1*, env2*}' env1-a env3

    Prints one line per name, `NAME match` or `NAME no match`, and exits 0; a malformed
    pattern is reported on stderr with exit status 2.
    """
    if (repository is None) == (tag is None):
        raise UserError("give exactly one of --repository PATTERN or --tag PATTERN")
    try:
        if repository is not None:
            fullmatch, pattern, kind = repository_fullmatch(repository), repository, "repository"
        else:
            assert tag is not None
            fullmatch, pattern, kind = tag_fullmatch(tag), tag, "tag"
    except PatternError as exc:
        raise UserError(str(exc)) from None
    results = [(name, fullmatch(name) is not None) for name in names]
    if as_json:
        emit_json(
            {
                kind: pattern,
                "results": [{"name": n, "match": m} for n, m in results],
            }
        )
        return
    for name, matched in results:
        click.echo(f"{name} {'match' if matched else 'no match'}")
