"""The ``solvable-attention`` parser, the command registry and the entry point :func:`main`.

Commands register themselves in :data:`COMMANDS`: each is a module with ``register(subparsers)``, which
adds one sub-parser and sets ``func=<handler(args) -> exit status>``. Adding a command is one module and
one entry in :data:`COMMANDS`.

Errors: a bad argument (:class:`UsageError`, or a ``ValueError`` from the package's parameter checks)
prints one line ``error: <message>`` on stderr and returns :data:`EXIT_USAGE` (2). The package names
parameters by their Python keyword (``alpha_prime must be ...``); :func:`flag_message` rewrites that
leading keyword into the flag of the command that was run (``--alpha-prime must be ...``).
"""

from __future__ import annotations

import argparse
import re
import sys

from . import convergence, reproduce, simulate, solve
from .arguments import EXIT_USAGE, UsageError, add_compilation_cache_arguments, use_compilation_cache

PROG = "solvable-attention"
COMMANDS = (simulate, solve, reproduce, convergence)

__all__ = ["main", "build_parser", "flag_message", "UsageError", "EXIT_USAGE", "COMMANDS"]


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    A :class:`UsageError` or ``ValueError`` raised while parsing or running the command is caught and
    printed as one line ``error: <message>`` on stderr (the leading keyword turned into the flag by
    :func:`flag_message`); ``--help`` and ``--version`` print and return their own status.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 success; 1 a command's own failure status (``solve``: some point did not
        converge); 2 (:data:`EXIT_USAGE`) a bad argument (one line ``error: <message>`` on stderr, naming
        the flag).
    """
    parser = build_parser()
    args = None
    try:
        args = parser.parse_args(argv)
        use_compilation_cache(args)
        return int(args.func(args) or 0)
    except (UsageError, ValueError) as exc:  # ValueError: the package's parameter checks
        command = getattr(args, "command", None)
        print(f"error: {flag_message(str(exc), parser.flags.get(command, {}))}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`, with ``--version``.

    Returns:
        The ``argparse.ArgumentParser`` (one whose ``error`` raises :class:`UsageError` instead of
        exiting); ``parser.flags[command]`` maps each keyword (``dest``) of that command to its flag.
    """
    parser = _Parser(prog=PROG, description="Solvable attention model: finite-D simulations and theory.")
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    for sub in subparsers.choices.values():
        add_compilation_cache_arguments(sub)
    parser.flags = {name: _flags(sub) for name, sub in subparsers.choices.items()}
    return parser


def package_version() -> str:
    """The installed distribution's version.

    Returns:
        The version of the ``solvable-attention`` distribution (``importlib.metadata``), or ``"unknown"``
        when it is not installed.
    """
    from importlib import metadata

    try:
        return metadata.version(PROG)
    except metadata.PackageNotFoundError:
        return "unknown"


def _flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest`` → the longest option string of each optional argument of ``parser`` (``alpha_prime`` →
    ``--alpha-prime``)."""
    return {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}


_LEADING_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\b")


def flag_message(message: str, flags: dict[str, str]) -> str:
    """``message`` with its leading parameter keyword replaced by the flag the user typed.

    ``flag_message("alpha_prime must be in (0, inf), got -1.0", {"alpha_prime": "--alpha-prime"})`` →
    ``"--alpha-prime must be in (0, inf), got -1.0"``.

    Args:
        message: an error message, typically a ``ValueError``'s from the package's parameter checks.
        flags: keyword (``dest``) → flag of the command that was run (``build_parser().flags[command]``).

    Returns:
        ``message`` with its leading keyword replaced by its flag; unchanged when it does not start with
        a keyword of ``flags``.
    """
    match = _LEADING_NAME.match(message)
    if match and match.group(1) in flags:
        return flags[match.group(1)] + message[match.end():]
    return message


if __name__ == "__main__":
    sys.exit(main())
