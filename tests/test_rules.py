"""Trigger rules: validation of every field, and matching against the table of docs/patterns.md."""

from __future__ import annotations

import pytest

from receiver.registry.rules import DEFAULT_ACTIONS, RuleError, TriggerRule, parse_header
from receiver.testing import make_event

R = pytest.param
URL = "http://127.0.0.1:8000/webhook"


def test_defaults_are_the_consoles():
    """A new rule listens to the console's four actions, everywhere, and is enabled."""
    rule = TriggerRule("webhook-demo", URL)
    assert rule.actions == DEFAULT_ACTIONS == ("pushImage", "deleteImage", "uploadChart", "deleteChart")
    assert rule.enabled and rule.namespace is None and rule.repository == rule.tag == ""


@pytest.mark.parametrize("fields, message", [
    R({"name": "Webhook"}, "name 'Webhook' is invalid", id="upper-case-name"),
    R({"name": "-demo"}, "name '-demo' is invalid", id="name-starts-with-symbol"),
    R({"name": "a" * 65}, "is invalid", id="name-too-long"),
    R({"name": "a b"}, "is invalid", id="name-with-space"),
    R({"url": "ftp://host/x"}, "must start with http:// or https://", id="ftp-url"),
    R({"url": "http://"}, "has no host", id="no-host"),
    R({"url": "http://u:p@host/"}, "credentials in the URL are not allowed", id="userinfo"),
    R({"url": "http://host:99999/"}, "is not a valid URL", id="bad-port"),
    R({"url": "http://ho st/"}, "contains white space", id="space"),
    R({"actions": ("pushImage", "scan")}, "action 'scan' is unknown", id="bad-action"),
    R({"actions": ()}, "at least one action", id="no-action"),
    R({"repository": "/{a,b"}, "repository pattern: unclosed '{' at position 1", id="bad-repo-pattern"),
    R({"tag": "v[0-"}, "tag pattern: unclosed '['", id="bad-tag-pattern"),
    R({"headers": (("Bad Key", "x"),)}, "a header name must be an HTTP token", id="bad-header-name"),
    R({"headers": (("X-A", "a\r\nInjected: 1"),)}, "may not contain CR, LF", id="header-crlf"),
    R({"namespace": "a/b"}, "a namespace has no '/'", id="namespace-slash"),
    R({"namespace": "Prod"}, "namespace 'Prod' is invalid: a namespace is lower-case letters",
      id="namespace-upper-case"),
    R({"namespace": "a b"}, "so this rule could never fire", id="namespace-space"),
    R({"headers": (("K", "a\x01b"),)}, "control characters", id="header-control"),
    R({"headers": (("K", ""),)}, "has an empty value", id="header-empty"),
    R({"url": "http://b\u00fccher.example/"}, "must be ASCII", id="idn-url"),
])
def test_invalid_rules_are_refused_at_creation(fields, message):
    """Every field is checked when the rule is made, with a message naming the field."""
    with pytest.raises(RuleError, match=message.replace("[", r"\[").replace("{", r"\{")):
        TriggerRule(**{"name": "r", "url": URL, **fields})


@pytest.mark.parametrize("url", ["htps://admin:s3cret@h/", "http://admin:s3cret@h:99999/",
                                 "http://admin:s3cret@h/", "http://s3cret@h"])
def test_url_errors_never_show_credentials(url):
    """Whatever is wrong with a URL that carries credentials, the message hides them."""
    with pytest.raises(RuleError) as info:
        TriggerRule("r", url)
    assert "s3cret" not in str(info.value)
    assert "credentials in the URL are not allowed" in str(info.value)


def test_at_sign_after_the_host_is_not_credentials():
    """An '@' in the path or query is fine."""
    assert TriggerRule("r", "http://h/hook?by=@me").url == "http://h/hook?by=@me"


def test_bad_header_names_are_not_echoed():
    """A mistyped separator puts the secret in the name; the message leaves it out."""
    with pytest.raises(RuleError) as info:
        parse_header("Authorization=Bearer abc:s3cretpart")
    assert "s3cret" not in str(info.value) and "Bearer" not in str(info.value)


def test_valid_names_and_unicode_description():
    """Names may use -._ after the first character; descriptions take any text."""
    rule = TriggerRule("a1.b_c-d", URL, description="部署到生产")
    assert rule.description == "部署到生产"
    assert TriggerRule("9" * 64, URL).name == "9" * 64


def test_parse_header():
    """'Key: Value' splits at the first colon; a value may contain colons; keys may repeat."""
    assert parse_header("Authentication: Bearer a:b") == ("Authentication", "Bearer a:b")
    rule = TriggerRule("r", URL, headers=(("X-Key", "1"), ("X-Key", "2")))
    assert rule.headers == (("X-Key", "1"), ("X-Key", "2"))
    with pytest.raises(RuleError, match="no ':' found") as info:
        parse_header("Authentication s3cret")
    assert "s3cret" not in str(info.value)


def test_to_dict_masks_header_values():
    """Header values are masked unless asked for."""
    rule = TriggerRule("r", URL, headers=(("Authentication", "s3cret"),))
    assert rule.to_dict()["headers"] == [["Authentication", "******"]]
    assert rule.to_dict(reveal=True)["headers"] == [["Authentication", "s3cret"]]


# The registry's examples (docs/patterns.md), as rules: (repository, tag, full name, tags, fires, tags delivered)
TABLE = [
    R("**", "", "public/a/b", ["x"], True, ["x"], id="every-repository"),
    R("", "", "public/a", ["x"], True, ["x"], id="empty-matches-all"),
    R("/path*", "", "public/pathx", ["x"], True, ["x"], id="path-prefix"),
    R("/path*", "", "public/pathx/y", ["x"], False, None, id="path-prefix-first-level-only"),
    R("/{path1, path2}*", "", "public/path2z", ["x"], True, ["x"], id="two-prefixes"),
    R("/{path1, path2}/**", "", "public/path1/a/b", ["x"], True, ["x"], id="under-folders"),
    R("/{path1, path2}/**", "", "public/path1x/a", ["x"], False, None, id="not-under-folders"),
    R("/{path1, path2}*/**", "", "public/path1x", ["x"], True, ["x"], id="prefix-any-depth-first-level"),
    R("/{path1, path2}*/**", "", "public/path2y/z", ["x"], True, ["x"], id="prefix-any-depth-deep"),
    R("", "1.?", "public/a", ["1.2", "1.10", "2.0"], True, ["1.2"], id="tag-1x"),
    R("", "{env1*, env2*}", "public/a", ["env1-a", "env3", "env2"], True, ["env1-a", "env2"], id="tag-envs"),
    R("", "{env1*, env2*}", "public/a", ["env3"], False, None, id="no-tag-matches"),
]


@pytest.mark.parametrize("repository, tag, full_name, tags, fires, delivered", TABLE)
def test_rule_matching_follows_the_spec_table(repository, tag, full_name, tags, fires, delivered):
    """A rule fires as the registry's examples say, and carries only the tags that matched."""
    rule = TriggerRule("r", URL, namespace="public", repository=repository, tag=tag)
    event = make_event("pushImage", full_name, tags)
    assert rule.matches(event) is fires
    resources = rule.matching_resources(event)
    assert (None if resources is None else [r.tag for r in resources]) == delivered


def test_action_and_namespace_must_match():
    """The action must be one of the rule's, and the namespace must be the rule's."""
    rule = TriggerRule("r", URL, actions=("pushImage",), namespace="prod")
    assert rule.matches(make_event("pushImage", "prod/app"))
    assert not rule.matches(make_event("deleteImage", "prod/app"))
    assert not rule.matches(make_event("pushImage", "staging/app"))
    assert not rule.matches(make_event("pushImage", "production/app"))
    assert TriggerRule("any", URL).matches(make_event("pushImage", "whatever/app"))


def test_repository_is_matched_relative_to_the_namespace():
    """The pattern sees 'team/api', not 'prod/team/api'."""
    rule = TriggerRule("r", URL, repository="/team/*")
    assert rule.matches(make_event("pushImage", "prod/team/api"))
    assert not TriggerRule("r", URL, repository="/prod/**").matches(make_event("pushImage", "prod/team/api"))


def test_a_rule_has_a_format():
    """A rule sends tcr by default; any of the three formats can be chosen."""
    assert TriggerRule("r", URL).format == "tcr"
    assert TriggerRule("r", URL, format="harbor").to_dict()["format"] == "harbor"
    with pytest.raises(RuleError, match="format 'json' is unknown; expected one of: tcr, harbor, cloudevents"):
        TriggerRule("r", URL, format="json")


def test_default_actions_are_those_the_format_carries():
    """A CloudEvents rule listens to the console's image actions: it has no chart events."""
    assert TriggerRule("r", URL, format="harbor").actions == DEFAULT_ACTIONS
    assert TriggerRule("r", URL, format="cloudevents").actions == ("pushImage", "deleteImage")


@pytest.mark.parametrize("format, actions, message", [
    R("cloudevents", ("pushImage", "uploadChart"), "the cloudevents format has no uploadChart event:",
      id="cloudevents-chart"),
    R("tcr", ("replication", "tagRetention"), "the tcr format has no replication, tagRetention events",
      id="tcr-replication"),
    R("tcr", ("scanningStopped",), "the tcr format has no scanningStopped event", id="tcr-scan-stopped"),
])
def test_actions_the_format_cannot_carry_are_refused(format, actions, message):
    """A rule whose actions include one its format has no event for is refused when made."""
    with pytest.raises(RuleError, match=message):
        TriggerRule("r", URL, actions=actions, format=format)


def test_every_action_is_a_rule_action():
    """Any of the 13 actions may be listened to, in the format that carries them all."""
    from receiver.core.events import ACTIONS

    assert TriggerRule("r", URL, actions=ACTIONS, format="harbor").actions == ACTIONS


def test_changing_the_format_checks_the_actions_again():
    """replace() with a format that cannot carry the rule's actions is refused."""
    rule = TriggerRule("r", URL)
    with pytest.raises(RuleError, match="cloudevents format has no uploadChart, deleteChart events"):
        rule.replace(format="cloudevents")
    assert rule.replace(format="cloudevents", actions=("pushImage",)).format == "cloudevents"


def test_events_without_a_repository_fire_only_unfiltered_rules():
    """Replication has no namespace or repository: an unfiltered rule fires for it."""
    from receiver.core.events import build_event

    event = build_event("replication")
    assert TriggerRule("r", URL, actions=("replication",), format="harbor").matches(event)
    assert TriggerRule("r", URL, actions=("replication", "pushImage"), format="harbor",
                       namespace="", repository="", tag="").matches(event)


@pytest.mark.parametrize("actions, fields, message", [
    R(("replication",), {"namespace": "prod"}, "namespace: replication events have no repository",
      id="replication-namespace"),
    R(("pushImage", "tagRetention"), {"tag": "v*"}, "tag: tagRetention events have no repository",
      id="retention-tag"),
    R(("replication", "tagRetention"), {"namespace": "prod", "repository": "/app*", "tag": "v*"},
      "namespace, repository and tag: replication and tagRetention events have no repository, "
      "so a rule with a namespace, repository or tag never fires for them; leave those empty, "
      "or move replication and tagRetention to a rule without them", id="all-three"),
])
def test_a_filter_on_events_without_a_repository_is_refused(actions, fields, message):
    """A rule that could never fire for some of its actions is refused when it is made or
    changed, so no Python user keeps a replication rule that stays silent."""
    with pytest.raises(RuleError, match=f"^{message}"):
        TriggerRule("r", URL, actions=actions, format="harbor", **fields)
    rule = TriggerRule("r", URL, actions=("pushImage",), format="harbor", **fields)
    with pytest.raises(RuleError, match=f"^{message}"):
        rule.replace(actions=actions)
