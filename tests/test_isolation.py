"""Handlers scoped to one app (create_app(handlers=...)), and isolated_handlers()."""

from __future__ import annotations

import pytest
from flask import Flask

from receiver import ConfigError, Receiver, create_app, on, signals
from receiver.handlers.dispatch import Handlers
from receiver.testing import isolated_handlers, make_body, run_jobs

SYNC = {"RECEIVER_QUEUE": "sync"}


def post(app, action="pushImage", target=("prod/api", ["v1"])):
    return app.test_client().post("/webhook", json=make_body(action, *target))


def test_two_apps_in_one_process_run_only_their_own_handlers():
    """Each app runs its registry's handlers; neither runs the other's."""
    seen = []
    a, b = Handlers(), Handlers()
    a.on("pushImage")(lambda event: seen.append("a"))
    b.on("pushImage")(lambda event: seen.append("b"))
    app_a, app_b = create_app(SYNC, handlers=a), create_app(SYNC, handlers=b)

    assert post(app_a).get_json()["handlers"] == 1
    assert seen == ["a"]
    assert post(app_b).get_json()["handlers"] == 1
    assert seen == ["a", "b"]


def test_an_app_with_handlers_ignores_the_process_wide_ones():
    """on() handlers run in default apps only; a registry's run in its apps only."""
    seen = []
    on("pushImage")(lambda event: seen.append("everywhere"))
    scoped = Handlers()
    scoped.on("pushImage")(lambda event: seen.append("scoped"))

    post(create_app(SYNC, handlers=scoped))
    assert seen == ["scoped"]
    post(create_app(SYNC))
    assert seen == ["scoped", "everywhere"]


def test_a_registry_keeps_filters_and_takes_handlers_added_later():
    """Handlers.on() filters as on() does, and a handler added after create_app runs too."""
    handlers = Handlers()
    app = create_app(SYNC, handlers=handlers)
    tags = []
    handlers.on("pushImage", namespace="prod", tag="v*")(lambda event: tags.append(event.tags))

    assert post(app, target=("prod/api", ["v1", "latest"])).get_json()["handlers"] == 1
    assert post(app, target=("dev/api", ["v2"])).get_json()["handlers"] == 0
    assert tags == [("v1",)]
    with pytest.raises(ValueError, match="unknown action 'push'"):
        handlers.on("push")


def test_a_registry_forgets_with_off():
    """Handlers.off(fn) removes fn from that registry only."""
    seen = []
    handlers, other = Handlers(), Handlers()
    handlers.on("pushImage")(seen.append)
    other.on("pushImage")(seen.append)
    handlers.off(seen.append)

    assert post(create_app(SYNC, handlers=handlers)).get_json()["handlers"] == 0
    assert post(create_app(SYNC, handlers=other)).get_json()["handlers"] == 1
    assert len(seen) == 1


def test_a_receiver_connected_for_one_app_runs_in_that_app():
    """A blinker receiver connected with sender=app counts as that app's handler."""
    app = create_app(SYNC, handlers=Handlers())
    seen = []

    def receiver(sender, event, **extra):
        seen.append(sender)

    with signals.push_image.connected_to(receiver, sender=app):
        assert post(app).get_json()["handlers"] == 1
        assert post(create_app(SYNC, handlers=Handlers())).get_json()["handlers"] == 0
    assert seen == [app]


def test_scoped_handlers_run_as_jobs(tmp_path):
    """In queue mode, each app's jobs name and find its own handlers."""
    ran = []

    def deploy(event):
        ran.append(("a", event.tags))

    def notify(event):
        ran.append(("b", event.tags))

    on("pushImage")(lambda event: ran.append(("everywhere", event.tags)))
    a, b = Handlers(), Handlers()
    a.on("pushImage")(deploy)
    b.on("pushImage")(notify)
    apps = [
        create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path}/{name}.db", "RECEIVER_WORKERS": 0},
                   handlers=registry)
        for name, registry in (("a", a), ("b", b))
    ]
    for app in apps:
        resp = post(app)
        assert (resp.status_code, resp.get_json()["handlers"]) == (202, 1)

    jobs = run_jobs(apps[0]) + run_jobs(apps[1])
    assert [(job.handler, job.status) for job in jobs] == [
        (f"{__name__}.test_scoped_handlers_run_as_jobs.<locals>.deploy", "succeeded"),
        (f"{__name__}.test_scoped_handlers_run_as_jobs.<locals>.notify", "succeeded"),
    ]
    assert ran == [("a", ("v1",)), ("b", ("v1",))]


def test_the_extension_takes_handlers_too():
    """Receiver(app, handlers=...) scopes the handlers of an app you made yourself."""
    handlers = Handlers()
    seen = []
    handlers.on("pushImage")(seen.append)
    app = Flask(__name__)
    app.config["RECEIVER_QUEUE"] = "sync"
    Receiver(app, handlers=handlers)

    assert app.extensions["receiver"].handlers is handlers  # the app's state, and only there
    assert post(app).get_json()["handlers"] == 1
    assert len(seen) == 1


def test_handlers_and_receiver_handlers_together_are_refused(monkeypatch, tmp_path):
    """Given both, create_app says which to leave out rather than drop the modules' handlers."""
    (tmp_path / "isolation_mod.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="RECEIVER_HANDLERS is set, but create_app"):
        create_app({**SYNC, "RECEIVER_HANDLERS": "isolation_mod"}, handlers=Handlers())
    with pytest.raises(TypeError, match=r"takes a receiver\.Handlers registry, not list"):
        create_app(SYNC, handlers=[print])


def test_isolated_handlers_removes_what_was_registered_inside():
    """on() registrations made in the block are gone after it; earlier ones stay."""
    seen = []
    app = create_app(SYNC)
    on("pushImage")(lambda event: seen.append("before"))
    with isolated_handlers():
        on("pushImage")(lambda event: seen.append("inside"))
        post(app)
        assert sorted(seen) == ["before", "inside"]
    seen.clear()
    assert post(app).get_json()["handlers"] == 1
    assert seen == ["before"]


def test_isolated_handlers_removes_only_the_inner_registration_of_a_function():
    """A function registered before and again inside keeps its first registration."""
    seen = []
    app = create_app(SYNC)
    on("pushImage")(seen.append)
    with isolated_handlers():
        on("deleteImage")(seen.append)
        assert post(app, "deleteImage").get_json()["handlers"] == 1
    assert post(app, "deleteImage").get_json()["handlers"] == 0
    assert post(app, "pushImage").get_json()["handlers"] == 1


def test_isolated_handlers_nest_and_restore_nothing_else():
    """Nested blocks each undo their own; a handler off()-ed inside stays off."""
    seen = []
    app = create_app(SYNC)
    earlier = on("pushImage")(lambda event: seen.append("earlier"))
    with isolated_handlers():
        on("pushImage")(lambda event: seen.append("outer"))
        with isolated_handlers():
            on("pushImage")(lambda event: seen.append("inner"))
        from receiver import off

        off(earlier)
        post(app)
        assert seen == ["outer"]
    seen.clear()
    assert post(app).get_json()["handlers"] == 0
    assert seen == []
