"""The receiver for gunicorn: ``gunicorn wsgi:app``. Configure it with RECEIVER_* variables."""

from receiver import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    # One clear line rather than a traceback, and exit status 3, gunicorn's "worker failed
    # to boot", which stops the server instead of restarting the worker forever.
    from receiver.web.app import stop_gunicorn

    stop_gunicorn(exc)
