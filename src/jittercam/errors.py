"""Errors a user can act on: the CLI prints their message on one line and exits with status 2."""


class JitterCamError(ValueError):
    """A bad input: an unknown name, a file that is not an image, a class index out of range..."""
