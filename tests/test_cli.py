"""The `receiver match` command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from receiver.cli import main


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_match_repository(runner: CliRunner) -> None:
    """One line per name says match or no match, and the exit status is 0."""
    result = runner.invoke(
        main, ["match", "--repository", "/{path1, path2}*/**", "path1x/app", "other/app"]
    )
    assert result.exit_code == 0
    assert result.output.splitlines() == ["path1x/app match", "other/app no match"]


def test_match_tag(runner: CliRunner) -> None:
    """Tag patterns work the same way."""
    result = runner.invoke(main, ["match", "--tag", "{env1*, env2*}", "env1-a", "env3"])
    assert result.exit_code == 0
    assert result.output.splitlines() == ["env1-a match", "env3 no match"]


def test_match_json(runner: CliRunner) -> None:
    """--json prints the pattern and one result per name."""
    result = runner.invoke(main, ["match", "--tag", "1.?", "1.2", "1.10", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == {
        "tag": "1.?",
        "results": [{"name": "1.2", "match": True}, {"name": "1.10", "match": False}],
    }


def test_match_malformed_pattern(runner: CliRunner) -> None:
    """A malformed pattern prints the PatternError message and exits 2."""
    result = runner.invoke(main, ["match", "--repository", "/{a,b", "a"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: unclosed '{' at position 1 in '/{a,b'"


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["match", "x"], id="no-pattern"),
        pytest.param(["match", "--tag", "a", "--repository", "b", "x"], id="both-patterns"),
    ],
)
def test_match_needs_exactly_one_pattern(runner: CliRunner, args: list[str]) -> None:
    """Giving no pattern, or both kinds, is a usage error with exit status 2."""
    result = runner.invoke(main, args)
    assert result.exit_code == 2
    assert "exactly one of --repository" in result.output


def test_console_script_from_a_shell() -> None:
    """The installed `receiver` command works, and a bad pattern shows no traceback."""
    ok = subprocess.run(
        [sys.executable, "-m", "receiver", "match", "--repository", "/path*", "pathx", "pathx/y"],
        capture_output=True, text=True, check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["pathx match", "pathx/y no match"]
    bad = subprocess.run(
        [sys.executable, "-m", "receiver", "match", "--tag", "[z-a]", "v1"],
        capture_output=True, text=True, check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: reversed range 'z-a' at position 1 in '[z-a]'"
    assert "Traceback" not in bad.stderr


def test_help_explains_the_command(runner: CliRunner) -> None:
    """--help describes the pattern rules and shows an example."""
    result = runner.invoke(main, ["match", "--help"])
    assert result.exit_code == 0
    assert "leading" in result.output and "receiver match --tag" in result.output


def test_jobs_table_shows_a_dash_for_no_repository(tmp_path):
    """Jobs of replication and tag retention events have no repository: the table shows '-'."""
    from receiver import Handlers, create_app
    from receiver.testing import sample

    queue = f"sqlite:///{tmp_path / 'q.db'}"
    handlers = Handlers()
    handlers.on(["replication", "pushImage"])(lambda event: None)
    app = create_app({"RECEIVER_QUEUE": queue, "RECEIVER_WORKERS": 0}, handlers=handlers)
    for action in ("replication", "pushImage"):
        body = sample(action, format="harbor")
        assert app.test_client().post("/webhook", json=body).status_code == 202
    result = CliRunner().invoke(main, ["jobs", "--queue", queue])
    assert result.exit_code == 0, result.output
    header, push, replication = (line.split() for line in result.output.splitlines())
    assert header[3:6] == ["ACTION", "REPOSITORY", "TAGS"]
    assert push[3:6] == ["pushImage", "prod/api", "v1.4.2"]
    assert replication[3:7] == ["replication", "-", "-", "queued"]
