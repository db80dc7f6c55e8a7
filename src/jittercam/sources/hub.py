"""What the timm and Hugging Face sources share: importing the optional package, and a download that
fails in one line."""
from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ..errors import JitterCamError

# the loggers that report every retry of a download that cannot succeed (over 20 lines offline); the
# source's own one-line error replaces them
_NOISY = ("huggingface_hub", "transformers", "timm")


def require(package: str, extra: str, model: str) -> ModuleType:
    """Import an optional package a model source needs.

    Args:
        package: the module to import (`timm`, `transformers`).
        extra: jittercam's extra that installs it.
        model: the model asked for, for the message.

    Returns:
        The module.

    Raises:
        JitterCamError: the package is not installed; the message says how to install it.
    """
    try:
        return importlib.import_module(package)
    except ImportError:
        raise JitterCamError(f"model {model} needs {package}: pip install 'jittercam[{extra}]'") from None


@contextmanager
def quiet_downloads() -> Iterator[None]:
    """Silence the hub libraries' warnings (retries, fallbacks) for the duration: a failure becomes the
    source's one-line error."""
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
