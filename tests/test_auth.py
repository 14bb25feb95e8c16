"""Auth settings and header checks."""

from __future__ import annotations

import pytest

from receiver.web.auth import AuthConfigError, HeaderAuth, parse_auth_headers


def test_parse_json_text_and_lists():
    """The setting may be JSON text; a single value or a list of values per header."""
    assert parse_auth_headers('{"A": "x", "B": ["y", "z"]}') == {"A": (b"x",), "B": (b"y", b"z")}
    assert parse_auth_headers(None) == {} and parse_auth_headers("") == {}
    assert parse_auth_headers({"A": "Bearer a\tb"}) == {"A": (b"Bearer a\tb",)}  # inside: fine


@pytest.mark.parametrize("setting, message", [
    ('{"A": "s3cret"', "got text that is not JSON"),
    ('["s3cret"]', "got a JSON array"),
    ('"s3cret"', "got a JSON string"),
    ({"bad name": "s3cret"}, "'bad name' is not a valid header name"),
    ({"A": []}, "needs a value or a non-empty list"),
    ({"A": ["s3cret", ""]}, "must be a non-empty string"),
    ({"A": 5}, "needs a value or a non-empty list"),
    ({"A": "s3cret\r\nB: y"}, "contains CR or LF"),
    ({"A": "s3\x00cret"}, "contains a control character, which no HTTP request can carry"),
    ({"A": " s3cret "}, "begins or ends with white space, which HTTP strips"),
    ({"A": ["ok", "s3cret\t"]}, "begins or ends with white space"),
    ('{"Authentication": "s3cret", "authentication": "other"}',
     "headers 'Authentication' and 'authentication' are the same header"),
])
def test_bad_settings_are_explained_without_the_secret(setting, message):
    """A malformed setting names the problem and never repeats a value."""
    with pytest.raises(AuthConfigError) as info:
        parse_auth_headers(setting)
    assert message in str(info.value)
    assert "s3cret" not in str(info.value)


def test_check():
    """Every header must be present with one of its values."""
    auth = HeaderAuth(parse_auth_headers({"A": ["1", "2"], "B": "3"}))
    assert auth.check({"A": "2", "B": "3"}) is None
    assert auth.check({"A": "2"}) == "missing auth header 'B'"
    assert auth.check({"A": "9", "B": "3"}) == "wrong value for auth header 'A'"
    assert HeaderAuth({}).check({}) is None and not HeaderAuth({}).enabled


def test_non_ascii_values_compare_as_utf8():
    """A UTF-8 secret matches the latin-1 text a WSGI server hands over."""
    auth = HeaderAuth(parse_auth_headers({"A": "sécret"}))
    assert auth.check({"A": "sécret".encode().decode("latin-1")}) is None
