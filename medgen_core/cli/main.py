"""Entry point of the ``medgen`` console script.

Every sub-command module exposes ``register(subparsers)`` which adds its parser and sets ``func(args) -> int``.
Start-up is lazy: only the module of the command being run is imported (``medgen --help`` and ``medgen CMD --help``
import no torch, MONAI or diffusers of their own); the other commands appear in ``medgen --help`` through the
one-line help in :data:`COMMANDS`, which a test keeps equal to each module's own.

Errors end a run with one ``medgen: error: ...`` line on stderr (``--debug``: after the full traceback) and the
exit codes of :mod:`medgen_core.cli._common`: 2 for bad input (:class:`medgen_core.errors.MedGenError`, also when a
library wrapped one, and a value that argparse cannot convert or that is not one of the choices), 64 for a malformed
command line (unknown command or option, missing or extra argument), 70 for anything unexpected.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import NoReturn

from medgen_core import __version__
from medgen_core.cli._common import EXIT_CODES_HELP, EXIT_USAGE, EXIT_USER, one_line, report_error

__all__ = ["COMMANDS", "build_parser", "main", "one_line"]

#: Sub-commands in the order of ``medgen --help``: name -> (module, one-line help, exactly as the module registers it).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("medgen_core.cli.demo_cmd", "run super-resolution on the shipped MNI152 sample and report PSNR/SSIM"),
    "upscale": ("medgen_core.cli.upscale_cmd", "super-resolve a volume (in-plane by default)"),
    "translate": ("medgen_core.cli.translate_cmd", "translate a volume to another contrast (Pix2Pix / CycleGAN bundles)"),
    "augment": ("medgen_core.cli.augment_cmd", "generate synthetic training data (datasets, variants of a volume)"),
    "genseg": ("medgen_core.cli.genseg_cmd", "GenSeg: benchmark (9 labelled slices, 5 methods) and tissue segmentation"),
    "lab": ("medgen_core.cli.lab_cmd", "latent-space lab: bottleneck sweep, interpolation, encoder/decoder mixing, restoration"),
    "cvae": ("medgen_core.cli.cvae_cmd", "signal CVAE (ABR): simulate data, train, sample (joint / legacy), evaluate"),
    "evaluate": ("medgen_core.cli.evaluate_cmd", "evaluate generated images (realism suite)"),
    "provenance": ("medgen_core.cli.provenance_cmd", "show or verify the AI-generation record of a file"),
    "train": ("medgen_core.cli.train_cmd", "retrain a bundle on your own data (a copy with re-hashed weights)"),
    "bundle": ("medgen_core.cli.bundle_cmd", "list, run, check, pack, install or rehash MONAI bundles"),
}
#: The command modules (kept for readers of the old name).
COMMAND_MODULES = tuple(module for module, _ in COMMANDS.values())

_DEBUG = "--debug"


class OneLineParser(argparse.ArgumentParser):
    """An argparse parser whose refusals are one line like every other medgen error: exit code 2 for a value that
    cannot be used (its type function or ``choices`` refused it: bad input), 64 for a malformed command line (unknown
    command or option, missing or extra argument, option without its value). Sub-parsers are of this class too."""

    _bad_value = False

    def _get_value(self, action: argparse.Action, arg_string: str):
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError:
            self._bad_value = True
            raise

    def _check_value(self, action: argparse.Action, value) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError:
            # an unknown command or action is a usage error; a value outside an option's choices is bad input
            self._bad_value = not isinstance(action, argparse._SubParsersAction)
            raise

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("medgen").strip()
        where = f"{command}: " if command else ""
        code = EXIT_USER if self._bad_value else EXIT_USAGE
        self.exit(code, f"medgen: error: {where}{one_line(message)} (see '{self.prog} --help')\n")


def _available(module: str) -> bool:
    """Whether the command module exists (found without importing it)."""
    return importlib.util.find_spec(module) is not None


def build_parser(full: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``medgen`` parser. ``full``: the commands to register in full (their module is imported); the others get
    a placeholder that only carries their one-line help. ``None`` (the default): every command in full."""
    selected = set(COMMANDS if full is None else full)
    parser = OneLineParser(prog="medgen", description="Generative models for medical volumes.", epilog=EXIT_CODES_HELP)
    parser.add_argument("--version", action="version", version=f"medgen {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(_DEBUG, action="store_true", help="on an error, print the full traceback before the one-line message "
                                                          "(also accepted after the command)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name not in selected:
            if _available(module_name):
                subparsers.add_parser(name, help=help_text, add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise  # the module exists but one of its own imports is missing: a real error
            logging.getLogger(__name__).debug("sub-command module %s not available; skipped", module_name)
            continue
        module.register(subparsers)
    return parser


def _split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug`` (anywhere before a ``--``), and whether it was there."""
    end = list(argv).index("--") if "--" in argv else len(argv)
    head = [a for a in argv[:end] if a != _DEBUG]
    return head + list(argv[end:]), len(head) < end


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: its first word that is not an option (medgen's own options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv, debug = _split_debug(sys.argv[1:] if argv is None else argv)
    command = _command_of(argv)
    where = f"medgen {command}" if command in COMMANDS else "medgen"
    try:
        parser = build_parser([command] if command in COMMANDS else [])
    except (Exception, KeyboardInterrupt) as err:  # a command module that cannot be imported (missing package)
        return report_error(err, debug=debug, command=where)
    args = parser.parse_args(argv)  # --help, --version and refusals exit here (one line; code 2 bad value, 64 usage)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as err:
        return report_error(err, debug=debug, command=where)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
