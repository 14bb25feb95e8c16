"""The receiver for gunicorn: ``gunicorn wsgi:app``. Configure it with RECEIVER_* variables."""

import sys

from receiver import ConfigError, create_app

try:
    app = create_app()
except ConfigError as exc:
    # One clear line rather than a traceback; 3 is gunicorn's "worker failed to boot",
    # which stops the server instead of restarting the worker forever.
    print(f"receiver: configuration error: {exc}", file=sys.stderr, flush=True)
    sys.exit(3)
