"""Refuse logging INI files that would run code or touch files when ``logging.config.fileConfig`` reads them.

``fileConfig`` (which MONAI's ``ConfigWorkflow`` calls on a bundle's ``configs/logging.conf`` before
anything else) resolves every ``class=`` by name and evaluates ``args=``/``kwargs=`` with ``eval``. A
bundle's logging file may therefore name only stream handlers (:data:`HANDLER_CLASSES`) and plain
formatters (:data:`FORMATTER_CLASSES`), and give literal arguments (``sys.stdout``/``sys.stderr``
allowed): a ``FileHandler`` would create or truncate any file the user can write, a ``SocketHandler``
would send the log elsewhere, and a handler class given as a formatter is called with the format string
as its first argument.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

__all__ = ["FORMATTER_CLASSES", "HANDLER_CLASSES", "check_logging_ini"]

HANDLER_CLASSES = ("StreamHandler", "NullHandler")
FORMATTER_CLASSES = ("Formatter",)


def _class_name(value: str) -> str | None:
    """``StreamHandler`` for ``StreamHandler``, ``logging.StreamHandler`` or ``logging.handlers.X``-style names; else None."""
    match = re.fullmatch(r"(?:logging(?:\.handlers)?\.)?([A-Za-z]\w*)", value)
    return match.group(1) if match else None


def check_logging_ini(path: str | Path) -> list[str]:
    """Problems in a logging INI file: a ``class=`` other than a stream handler or a formatter, or
    non-literal ``args=``/``kwargs=``."""
    import configparser
    import logging

    name = Path(path).name
    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read(path)
    except configparser.Error as err:
        return [f"{name}: cannot be parsed ({str(err).splitlines()[0]})"]
    problems = []
    for section in ini.sections():
        allowed = HANDLER_CLASSES if section.startswith("handler_") else FORMATTER_CLASSES if section.startswith("formatter_") else ()
        for key, value in ini.items(section):
            value = value.strip()
            if key == "class":
                cls = _class_name(value)
                if cls not in allowed or not isinstance(getattr(logging, cls, None), type):
                    problems.append(f"{name} [{section}] class={value!r}: only {', '.join(allowed) or 'no class'} "
                                    "from logging is allowed here (fileConfig instantiates it when the bundle starts)")
            elif key in ("args", "kwargs"):
                try:
                    ast.literal_eval(re.sub(r"\bsys\.(stdout|stderr)\b", "None", value))
                except (ValueError, SyntaxError):
                    problems.append(f"{name} [{section}] {key}={value!r}: must be a literal (sys.stdout / sys.stderr allowed)")
    return problems
