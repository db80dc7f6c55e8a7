"""The `jittercam` command: one module per subcommand, assembled here.

    jittercam explain IMAGE|FOLDER ... --out DIR     (cli/explain.py)
    jittercam compare IMAGE ... --out FILE.png       (cli/compare.py)
    jittercam bench EXPERIMENT ... / report ...      (bench/cli.py, bench/report.py)
    jittercam groundtruth train                      (groundtruth/cli.py)
    jittercam list / tune                            (cli/listing.py, cli/tune.py)

Each module has `add_parser(commands)` and `run(args) -> exit status`, and may have `FLAGS`, the flags
of library parameters it spells otherwise than `--name-with-dashes`. Errors a user can act on are one
line on stderr and exit status 2; Ctrl-C is one line and exit status 130 (see `cli/common.py`).
"""
from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Sequence
from types import ModuleType

from .. import __version__, runtime
from ..bench import cli as bench_cli
from ..bench import report as bench_report
from ..groundtruth import cli as groundtruth_cli
from . import compare, explain, listing, tune
from .common import FLAGS, Parser, guarded

# subcommand -> its module, in the order `jittercam --help` lists them
COMMANDS: dict[str, ModuleType] = {
    "explain": explain,
    "compare": compare,
    "bench": bench_cli,
    "report": bench_report,
    "groundtruth": groundtruth_cli,
    "list": listing,
    "tune": tune,
}


def parser() -> argparse.ArgumentParser:
    """The whole command line: `--version` and a subparser per command."""
    root = Parser(prog="jittercam", description="Class activation maps for image classifiers.")
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: `sys.argv[1:]`). Returns the exit status.

    Called from Python, it changes the process as the command does: freed CPU memory is retained from then
    on (`jittercam.runtime.retain_freed_memory`)."""
    flags = dict(FLAGS)  # completed with the subcommand's own once it is known
    for stream in (sys.stdout, sys.stderr):  # a path the terminal's encoding cannot show is escaped, not fatal
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    runtime.retain_freed_memory()

    def run() -> int:
        args = parser().parse_args(argv)
        module = COMMANDS[args.command]
        flags.update(getattr(module, "FLAGS", {}))
        return module.run(args)

    return guarded(run, flags)
