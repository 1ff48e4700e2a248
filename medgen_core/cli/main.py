"""Entry point of the ``medgen`` console script.

Every sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func(args) -> int``. Errors that users can fix (bad input files, bad bundles) are raised as
:class:`medgen_core.errors.MedGenError` and printed as one clear line, with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from medgen_core import __version__
from medgen_core.errors import MedGenError

__all__ = ["build_parser", "main"]

# Sub-command modules, in the order they appear in ``medgen --help``.
COMMAND_MODULES = (
    "medgen_core.cli.demo_cmd",
    "medgen_core.cli.upscale_cmd",
    "medgen_core.cli.translate_cmd",
    "medgen_core.cli.augment_cmd",
    "medgen_core.cli.genseg_cmd",
    "medgen_core.cli.lab_cmd",
    "medgen_core.cli.cvae_cmd",
    "medgen_core.cli.provenance_cmd",
    "medgen_core.cli.bundle_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medgen", description="Generative models for medical volumes.")
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
        print(f"medgen: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medgen: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
