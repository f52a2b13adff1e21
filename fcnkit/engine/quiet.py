"""Scoped silencing of Lightning output that tells fcnkit users nothing they can act on.

Both are undone on exit (no global side effects): a ``logging.Filter`` on Lightning's rank-zero
logger drops its advertising tips ("💡 Tip: ... litlogger / litmodels"), and a warnings filter hides
the pytree ``LeafSpec`` deprecation that Lightning 2.6.6 triggers inside torch 2.14 (nothing a user,
or fcnkit, can change).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_lightning"]

_RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith("💡 Tip")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Run the enclosed Trainer construction/fit without Lightning's tips and the pytree warning."""
    logger, tips = logging.getLogger(_RANK_ZERO_LOGGER), _DropTips()
    logger.addFilter(tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
            yield
    finally:
        logger.removeFilter(tips)
