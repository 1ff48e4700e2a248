"""Entry point of the ``medgen`` console script.

Every sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Errors that users can fix (bad input files, bad bundles) are raised as
:class:`medgen_core.errors.MedGenError` and printed as one clear line, with exit code 2; so are bad
command-line values (argparse's usage errors, also one line, also exit code 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import re
import sys
from typing import NoReturn

from medgen_core import __version__
from medgen_core.errors import MedGenError

__all__ = ["build_parser", "main", "one_line"]

# Sub-command modules, in the order they appear in ``medgen --help``.
COMMAND_MODULES = (
    "medgen_core.cli.demo_cmd",
    "medgen_core.cli.upscale_cmd",
    "medgen_core.cli.translate_cmd",
    "medgen_core.cli.augment_cmd",
    "medgen_core.cli.genseg_cmd",
    "medgen_core.cli.lab_cmd",
    "medgen_core.cli.cvae_cmd",
    "medgen_core.cli.evaluate_cmd",
    "medgen_core.cli.provenance_cmd",
    "medgen_core.cli.bundle_cmd",
)


def one_line(message: object) -> str:
    """``message`` on one line: its non-empty lines joined with ``; `` (library messages may span lines)."""
    parts = [part.strip() for part in str(message).splitlines() if part.strip()]
    return re.sub(r":\s*;\s*", ": ", "; ".join(parts))


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line like every other medgen error (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("medgen").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"medgen: error: {where}{one_line(message)} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="medgen", description="Generative models for medical volumes.")
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise  # the module exists but one of its own imports is missing: a real error
            logging.getLogger(__name__).debug("sub-command module %s not available; skipped", name)
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except MedGenError as err:
        print(f"medgen: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
