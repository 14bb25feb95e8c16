"""The receiver for gunicorn: ``gunicorn wsgi:app``. Configure it with RECEIVER_* variables."""

from receiver import create_app

app = create_app()
