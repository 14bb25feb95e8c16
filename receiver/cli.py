"""The ``receiver`` command: try patterns, manage trigger rules, send events, read the log.

This module only parses arguments and prints; the work is done by the modules it calls.
Every mistake a user can make ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import sys
import typing as t

import click

from . import __version__
from .matcher import PatternError, repository_fullmatch, tag_fullmatch


class UserError(click.ClickException):
    """A mistake of the user's: one line on stderr, exit status 2."""

    exit_code = 2

    def show(self, file: t.IO[str] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def emit_json(data: t.Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="receiver")
def main() -> None:
    """Receive, send and test TCR / Harbor webhook events.

    Start with `receiver match --help` to try the registry's pattern language.
    """


@main.command()
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
