"""The registry's side: trigger rules (:mod:`.rules`), the store (:mod:`.store`), and the
sender (:mod:`.sender`, with :mod:`.transport`, :mod:`.retry` and :mod:`.bookkeeping`).

Its loggers (``receiver.registry.*``) stay silent until the application configures logging:
the ``receiver`` command says what happens on its own lines.
"""

from __future__ import annotations

import logging

logging.getLogger(__name__).addHandler(logging.NullHandler())
