"""Command lines built from the config dataclasses (tyro), with the stack's one-line errors.

A command's flags are the fields of a frozen dataclass (nested ones with ``tyro.conf.OmitArgPrefixes`` add
their fields without a prefix): names with hyphens (``batch_size`` -> ``--batch-size``), booleans as
``--flag/--no-flag`` pairs, defaults and help (the field's docstring or ``tyro.conf.arg(help=...)``) read
off the dataclass, so nothing is typed twice. ``__post_init__`` validates the values as they are built.

tyro reports bad input in a box of several lines; here every rejection becomes :class:`FlagError` with
one line that names the flag and what it expects (an unknown flag names the nearest valid one, as
``strict_config`` does for unknown keys). tyro's parse-error hook (``tyro._errors``) is private, so
``requirements/lock.txt`` pins tyro exactly; any rejection the hook does not describe is still reduced
to one line from tyro's own text.

:func:`add_subcommand` puts such a command beside the argparse subcommands of a console script
(``vla-policy train``); :func:`run_command` parses, runs and turns the errors into an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import tyro
from tyro import _errors as tyro_errors
from tyro.constructors import PrimitiveConstructorSpec

from vla_policy.data.episode_bag import one_line
from vla_policy.strict_config import ConfigError, nearest_name

T = TypeVar("T")

_FLAG = re.compile(r"(?<![\w-])--[a-z0-9][a-z0-9._-]*")
_BOX = str.maketrans("", "", "│╭╮╰╯┃┏┓┗┛|")


class FlagError(ConfigError):
    """Bad command-line input: one line naming the flag and what it expects."""


def comma_list(metavar: str = "A,B") -> PrimitiveConstructorSpec[tuple[str, ...]]:
    """A flag of several strings given as ``a,b`` or ``a b``: ``Annotated[tuple[str, ...], comma_list()]``."""

    def parse(args: list[str]) -> tuple[str, ...]:
        return tuple(item.strip() for arg in args for item in arg.split(",") if item.strip())

    return PrimitiveConstructorSpec(
        nargs="*",
        metavar=metavar,
        instance_from_str=parse,
        is_instance=lambda x: isinstance(x, tuple) and all(isinstance(i, str) for i in x),
        str_from_instance=lambda x: [",".join(x)],
    )


def _help_text(cls: type, prog: str, default: Any) -> str:
    out = io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        contextlib.suppress(SystemExit),
    ):
        tyro.cli(cls, args=["--help"], prog=prog, default=default)
    return out.getvalue()


def _one_line(text: str) -> str:
    """tyro's boxed message as one line: the box, rules and the "--help" footer dropped."""
    rows = [line.translate(_BOX).strip() for line in text.splitlines()]
    keep = [r for r in rows if r and set(r) - set("─━-") and not r.startswith("For full helptext")]
    return " ".join(" ".join(keep).split())


def _message(event: Any, known_flags: Callable[[], list[str]]) -> str | None:
    """One line for a tyro parse-error event; None for events it does not know (tyro's text is used)."""
    if isinstance(event, tyro_errors.UnrecognizedArgs):
        token = next((t for t in event.tokens if t.startswith("-")), event.tokens[0])
        name = token.split("=", 1)[0]
        hint = nearest_name(name, known_flags()) if name.startswith("-") else None
        tail = f"; did you mean '{hint}'?" if hint else f"; see {event.prog} --help for the flags"
        what = "unknown flag" if name.startswith("-") else "unexpected argument"
        return f"{what} '{name}'{tail}"
    if isinstance(event, tyro_errors.MissingArgs):
        names = ", ".join(a.arg.display_name() for a in event.missing_arguments)
        return f"missing required {names}"
    if isinstance(event, tyro_errors.BadValue):
        arg = event.argument
        if event.reason == "too_few_values":
            return f"{arg.display_name()} expects {arg.lowered.metavar}"
        return f"{arg.display_name()} takes no value, got {event.offending_value!r}"
    if isinstance(event, tyro_errors.InvalidChoice):
        return (
            f"{event.argument.display_name()} must be one of {', '.join(event.choices)}, got {event.value!r}"
        )
    if isinstance(event, tyro_errors.MutexConflict):
        return f"{event.first_token} and {event.second_token} cannot be given together"
    if isinstance(event, tyro_errors.InstantiationFailure):
        message = " ".join(event.message.split())
        if event.argument is None:
            return message
        return f"{event.argument.display_name()}: {message} (expected {event.argument.lowered.metavar})"
    return None


def parse(cls: type[T], argv: Sequence[str], prog: str, default: T | None = None) -> T:
    """Build ``cls`` from ``argv``; ``--help`` prints the flags and raises ``SystemExit(0)``.

    ``default`` replaces the dataclass's own defaults (a config read from a file, for example), so the
    flags given override it. Bad input raises :class:`FlagError` (one line); values rejected by a config's
    ``__post_init__`` raise its own error.
    """
    default_arg = tyro.MISSING_NONPROP if default is None else default

    def hook(event: Any) -> None:
        message = _message(event, lambda: sorted(set(_FLAG.findall(_help_text(cls, prog, default_arg)))))
        if message is not None:
            raise FlagError(message)

    err = io.StringIO()
    try:
        with tyro_errors.on_parse_error(hook), contextlib.redirect_stderr(err):
            return tyro.cli(cls, args=list(argv), prog=prog, default=default_arg)
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        raise FlagError(_one_line(err.getvalue()) or f"bad arguments (see {prog} --help)") from None


def run_command(
    prog: str,
    cls: type[T],
    argv: Sequence[str],
    run: Callable[[T], int],
    errors: tuple[type[BaseException], ...] = (),
    default: Callable[[Sequence[str]], T | None] | None = None,
) -> int:
    """Parse ``argv`` into ``cls``, call ``run`` and return its exit code.

    ``ConfigError`` (bad flags and values) and the ``errors`` given print ``PROG: error: <one line>``
    to stderr and return 2; Ctrl-C returns 130. ``default(argv)`` may build the defaults first (from a
    parameter file named in ``argv``).
    """
    try:
        command = parse(cls, argv, prog, default(argv) if default else None)
        return int(run(command))
    except (ConfigError, *errors) as exc:
        sys.stderr.write(f"{prog}: error: {one_line(exc)}\n")
        return 2
    except KeyboardInterrupt:
        return 130


def add_subcommand(
    subparsers: argparse._SubParsersAction, name: str, help: str, main: Callable[[Sequence[str]], int]
) -> argparse.ArgumentParser:
    """Register ``name`` on an argparse console script; all its arguments go to ``main(argv) -> int``
    (which parses them with :func:`parse`), ``--help`` included. See :func:`parse_known`."""
    p = subparsers.add_parser(name, help=help, add_help=False)
    p.set_defaults(config_main=main)
    return p


def parse_known(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list[str]]:
    """The console script's arguments, and those left for a subcommand of :func:`add_subcommand`
    (``args.config_main``); for any other subcommand, arguments it does not know are an error."""
    args, rest = parser.parse_known_args(argv)
    if rest and getattr(args, "config_main", None) is None:
        parser.exit(2, f"{parser.prog}: error: unrecognized arguments: {' '.join(rest)} (see --help)\n")
    return args, rest
