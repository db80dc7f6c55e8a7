"""Errors a user can act on: the CLI prints their message on one line and exits with status 2."""
from __future__ import annotations


class JitterCamError(ValueError):
    """A bad input: an unknown name, a file that is not an image, a class index out of range...

    Args:
        message: what is wrong, in the library's words: a parameter is named as the Python API spells it
            (`batch_size must be at least 1`).
        option: the parameter the message is about, when there is one. Front ends that spell parameters
            otherwise (the CLI's `--batch-size`) put their own spelling in place of its first mention.
    """

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option

    def __reduce__(self):  # keeps `option` through pickling (a torchrun worker's error)
        return _rebuild, (type(self), str(self), self.option)


def _rebuild(cls: type[JitterCamError], message: str, option: str | None) -> JitterCamError:
    return cls(message, option=option)
