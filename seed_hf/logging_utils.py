"""seed-hf's loggers, governed by transformers' logging settings.

`get_logger(__name__)` is `transformers.utils.logging.get_logger(__name__)` with the package's root logger
`seed_hf` hung below transformers' library root logger: seed-hf's messages then go through transformers' handler
and follow `transformers.logging.set_verbosity_*` and `TRANSFORMERS_VERBOSITY` like transformers' own.
"""

from __future__ import annotations

import logging

from transformers.utils import logging as transformers_logging

PACKAGE_LOGGER = "seed_hf"


def get_logger(name: str) -> logging.Logger:
    """The logger `name` (a `seed_hf.*` module name), below transformers' library root logger."""
    logging.getLogger(PACKAGE_LOGGER).parent = transformers_logging.get_logger("transformers")
    return transformers_logging.get_logger(name)
