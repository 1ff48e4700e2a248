"""Hand user values (paths, names, ``--set`` values) to a MONAI bundle config without the parser interpreting them.

MONAI's :class:`~monai.bundle.ConfigParser` reads strings as code: a value starting with ``$`` is
evaluated with ``eval``, ``%file#id`` loads another config (a macro), ``@id`` is a reference, ``@#``/``%#``
anywhere in a string is rewritten as a relative id, and ``#`` becomes ``::``. A file or folder name is
therefore never passed as a plain string. :func:`literal` turns a user string into the expression
``$bytes.fromhex('<hex>').decode('utf-8', 'surrogatepass')``: it holds only hex digits, so nothing in
it can be read as a reference, macro or relative id, and it evaluates to exactly the user's string
(the config still receives a ``str``, as it does from ``python -m monai.bundle run --input_file X``).
The same text works on MONAI's command line, which is how ``medgen bundle check`` passes paths to
its subprocesses. Numbers, booleans and ``None`` are not interpreted by MONAI and pass unchanged.

Config ids given by the user (``medgen bundle run --set ID VALUE``) are checked too: an id may not
address a special key (``_target_``, ``_requires_``, ``_disabled_``, ``_mode_``, ``_meta_`` ...), so a
user value can never become the class a component instantiates. ``--set`` values become literals
(:func:`parse_set_value`: JSON numbers, booleans, null and arrays/objects of those; anything else is a
string) and each string still goes through :func:`~medgen_core.bundles.config_safety.check_plain_string`,
because MONAI resolves some plain strings by name (``LoadImage(reader="pkg.Func")``).
:func:`expert_override` is the opt-in that lets MONAI interpret a value (``--set-expression``); the
value must then pass the same inspection as a bundle config.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import PurePath
from typing import Any, Mapping

from medgen_core.errors import BundleError

__all__ = ["check_override_id", "check_set_values", "expert_override", "is_literal", "literal", "literal_overrides", "parse_set_value",
           "torch_device"]

_LITERAL = re.compile(r"^\$bytes\.fromhex\('([0-9a-f]*)'\)\.decode\('utf-8', 'surrogatepass'\)$")
_ID_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# the one expression form medgen's callers used to pass for the device ("$torch.device('cpu')")
_DEVICE_EXPR = re.compile(r"^\$torch\.device\('((?:cpu|cuda|mps)(?::\d+)?)'\)$")


def torch_device(value: Any) -> Any:
    """A :class:`torch.device` from ``"cpu"``, ``"cuda:1"``, ``"$torch.device('cpu')"`` or a device (a
    :class:`BundleError` for anything else): the device reaches a config as an object, never as code."""
    import torch

    if isinstance(value, torch.device):
        return value
    text = str(value)
    match = _DEVICE_EXPR.match(text)
    try:
        return torch.device(match.group(1) if match else text)
    except (RuntimeError, ValueError, TypeError) as err:
        raise BundleError(f"device {text!r} is not a torch device (expected cpu, cuda, cuda:N or mps): {err}") from None


def literal(value: Any) -> Any:
    """``value`` in a form MONAI's parser passes through unchanged (strings and paths become inert expressions).

    Lists, tuples and dicts are converted element by element; a dict key that starts with ``_``
    (``_target_`` ...) is refused, since it would make the value a component. Other objects (numbers,
    ``torch.device``) are returned as they are.
    """
    if isinstance(value, PurePath):
        value = os.fspath(value)
    if isinstance(value, str):
        return f"$bytes.fromhex('{value.encode('utf-8', 'surrogatepass').hex()}').decode('utf-8', 'surrogatepass')"
    if isinstance(value, (list, tuple)):
        return [literal(v) for v in value]
    if isinstance(value, dict):
        special = [k for k in value if not isinstance(k, str) or k.startswith("_")]
        if special:
            raise BundleError(f"a literal value may not hold the special keys {special} (they would make it a component).")
        return {k: literal(v) for k, v in value.items()}
    return value  # numbers, booleans, None, objects such as torch.device: MONAI interprets only strings and containers


def is_literal(value: Any) -> bool:
    """Whether ``value`` is a string made by :func:`literal`."""
    return isinstance(value, str) and _LITERAL.match(value) is not None


def check_override_id(config_id: Any) -> str:
    """``config_id`` if it may be overridden by a user; a :class:`BundleError` otherwise.

    Parts are separated by ``#`` or ``::``; each starts with a letter or digit (so no ``_target_``,
    ``_meta_``, ``_requires_`` ...) and holds only letters, digits, ``_``, ``.`` and ``-``.
    """
    text = str(config_id)
    parts = text.replace("::", "#").split("#")
    if not all(_ID_PART.match(p) for p in parts):
        raise BundleError(
            f"config id {text!r} cannot be overridden: each part of an id (separated by '#' or '::') must start with a letter or digit "
            "and hold only letters, digits, '_', '.' and '-' (special keys such as _target_ or _meta_ cannot be set)."
        )
    return text


def literal_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{id: literal(value)}`` for every value that is not None, with every id checked."""
    return {check_override_id(key): literal(value) for key, value in values.items() if value is not None}


def check_set_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (``--set`` ids and parsed values) after refusing bad ids and strings that MONAI could
    resolve by name to code outside the allowlist (:func:`~medgen_core.bundles.config_safety.check_plain_string`:
    ``--set preprocessing#0#reader os.system``)."""
    from medgen_core.bundles.config_safety import check_plain_string

    for key, value in values.items():
        check_override_id(key)
        for text in _strings_in(value):
            if problem := check_plain_string(text, key.replace("::", "#").split("#")[-1]):
                raise BundleError(f"--set {key} {text!r}: {problem}; refusing it.")
    return dict(values)


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, (str, PurePath)):
        return [os.fspath(value)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings_in(v)]
    return []


def parse_set_value(text: str) -> Any:
    """A ``--set`` value as a literal: JSON numbers, booleans, null, and arrays/objects of those; else the string itself."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return text
    return value


def expert_override(config_id: str, value: str, aliases: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{config_id: value}`` for MONAI to interpret (``$`` expressions, ``@`` references ...), after the value
    passes the same inspection as a bundle config (:func:`~medgen_core.bundles.config_safety.check_config`)."""
    from medgen_core.bundles.config_safety import check_config

    check_override_id(config_id)
    parsed = parse_set_value(value)
    last = config_id.replace("::", "#").split("#")[-1]
    problems = check_config({last: parsed}, "--set-expression", dict(aliases or {}))
    if problems:
        raise BundleError(f"--set-expression {config_id} {value!r} is refused by the config inspection: " + "; ".join(problems))
    return {config_id: parsed}
