"""What every subcommand shares: the parser that reports usage errors as one line, the error line with
the CLI's flag names, and the exit statuses."""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import ClassVar

from ..errors import JitterCamError

EXIT_OK = 0
EXIT_ERROR = 2  # a mistake the user can act on: one line on stderr
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # the reader of stdout left (`jittercam list | head`)

# library parameters whose flag is not `--` + the name with dashes (`batch_size` -> `--batch-size`)
FLAGS = {"method_options": "--option"}
# the first line of a run whose model has `--weights random`
RANDOM_WEIGHTS = ("--weights random: the network is untrained, so its classes and maps are meaningless "
                  "(for trying shapes and speed only)")


class UsageError(Exception):
    """argparse's complaint, or another mistake in the command line, printed as one line."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one `UsageError` line (with a pointer to `--help`)."""

    # `{dest: flag}` of the command line parsed last (root and subcommand), for `in_cli_words`
    seen: ClassVar[dict[str, str]] = {}

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (`{self.prog} --help` shows the usage)")

    def parse_known_args(self, args=None, namespace=None):
        """As argparse's, remembering this parser's flags in `Parser.seen`.

        Args:
            args (list[str] | None): the command line's words; None reads `sys.argv`.
            namespace (argparse.Namespace | None): where the values go.

        Returns:
            argparse's `(namespace, the words left)`.
        """
        for action in self._actions:
            if action.option_strings:  # the longest spelling, `--compile` rather than its `--no-compile`
                spellings = [name for name in action.option_strings if not name.startswith("--no-")]
                Parser.seen.setdefault(action.dest, max(spellings or action.option_strings, key=len))
        return super().parse_known_args(args, namespace)


def flag(option: str, flags: Mapping[str, str] = FLAGS) -> str:
    """The command line's spelling of a library parameter: `batch_size` -> `--batch-size`."""
    return flags.get(option) or "--" + option.replace("_", "-")


def in_cli_words(error: JitterCamError, flags: Mapping[str, str] = FLAGS,
                 known: Mapping[str, str] | None = None) -> str:
    """The error's message with its parameter (`error.option`) spelled as the flag, at its first mention:
    `batch_size must be at least 1` -> `--batch-size must be at least 1`.

    Args:
        error: the library's error.
        flags: the spellings that are not `--` + the name with dashes (`method_options` -> `--option`).
        known: `{parameter: flag}` of the command line that ran (`Parser.seen`): a parameter that is not
            there has no flag (a method's option, given as `--option METHOD.NAME=VALUE`) and keeps its
            name; None spells every parameter as a flag.

    Returns:
        The message to print.
    """
    message = str(error)
    option = error.option
    if not option or option.startswith("-"):
        return message
    if option in flags:
        spelled = flags[option]
    elif known is None:
        spelled = flag(option, flags)
    elif option in known:
        spelled = known[option]
    else:
        return message
    mention = re.compile(rf"(?<![\w./\\-]){re.escape(option)}(?![\w/\\-])")  # not a part of a path
    return mention.sub(lambda _: spelled, message, count=1)


def say_error(message: str) -> None:
    """One line on stderr, as every error of the command is printed."""
    print(f"jittercam: error: {message}", file=sys.stderr)


def say_note(message: str) -> None:
    """One line on stderr, `--quiet` or not: something worth knowing before a long run (which methods are slow)."""
    print(f"jittercam: note: {message}", file=sys.stderr)


def say_warning(message: str) -> None:
    """One line on stderr, `--quiet` or not: something the outputs do not show (random weights, a file left out)."""
    print(f"jittercam: warning: {message}", file=sys.stderr)


def guarded(command: Callable[[], int], flags: Mapping[str, str] = FLAGS) -> int:
    """Run `command` and turn what ends it into an exit status: a `JitterCamError` or `UsageError` is one
    line and 2, Ctrl-C one line and 130, a closed stdout silence and 141.

    Args:
        command: the command line's work; returns its exit status.
        flags: the flag spellings of the subcommand that ran (read when an error is printed).
    """
    Parser.seen.clear()
    try:
        status = command()
        sys.stdout.flush()  # a closed pipe shows here, not in Python's last flush at exit
        return status
    except UsageError as exc:
        say_error(str(exc))
        return EXIT_ERROR
    except JitterCamError as exc:
        say_error(in_cli_words(exc, flags, Parser.seen or None))
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("jittercam: interrupted before any result was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `jittercam list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def on_terminal() -> bool:
    """Whether stderr is a terminal: progress bars are drawn there only."""
    return sys.stderr.isatty()
