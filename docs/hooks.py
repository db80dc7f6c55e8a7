"""mkdocs hooks: `<!-- jittercam-help: COMMAND -->` in a page becomes `jittercam COMMAND --help` as it
prints, so that the command-line reference is the parser's own text; `<!-- jittercam-readme -->` becomes the
README (the site's home page is the repository's front page, its links made relative to docs/)."""
from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

from jittercam.cli import main

MARKER = re.compile(r"<!-- jittercam-help: ([\w -]*?) -->")
README = Path(__file__).resolve().parent.parent / "README.md"


def _help(command: str) -> str:
    os.environ["COLUMNS"] = "80"  # argparse wraps at the terminal's width: the same text on every machine
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*command.split(), "--help"])
    return f"```text\n{out.getvalue().rstrip()}\n```"


def _readme() -> str:
    return README.read_text(encoding="utf-8").replace("](docs/", "](")


def on_page_markdown(markdown: str, **_) -> str:
    markdown = markdown.replace("<!-- jittercam-readme -->", _readme())
    return MARKER.sub(lambda match: _help(match.group(1)), markdown)
