"""receiver: the consumer side of Tencent Container Registry (TCR) and Harbor webhooks."""

from __future__ import annotations

from .matcher import PatternError, compile_pattern, repository_matches, tag_matches

__version__ = "0.1.0"

__all__ = [
    "PatternError",
    "__version__",
    "compile_pattern",
    "repository_matches",
    "tag_matches",
]
