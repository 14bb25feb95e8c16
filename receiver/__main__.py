"""``python -m receiver`` runs the ``receiver`` command."""

from __future__ import annotations

from .cli import main

main(prog_name="receiver")
