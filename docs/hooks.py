"""mkdocs hook: `<!-- jittercam-help: COMMAND -->` in a page becomes `jittercam COMMAND --help` as it prints,
so that the command-line reference is the parser's own text."""
from __future__ import annotations

import contextlib
import io
import os
import re

from jittercam.cli import main

MARKER = re.compile(r"<!-- jittercam-help: ([\w -]*?) -->")


def _help(command: str) -> str:
    os.environ["COLUMNS"] = "80"  # argparse wraps at the terminal's width: the same text on every machine
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*command.split(), "--help"])
    return f"```text\n{out.getvalue().rstrip()}\n```"


def on_page_markdown(markdown: str, **_) -> str:
    return MARKER.sub(lambda match: _help(match.group(1)), markdown)
