"""Refuse bundle configs that would run code from outside a short list of trusted libraries.

MONAI bundle configs are programs: ``"_target_"`` names a class or function to call and every string
starting with ``$`` is evaluated as Python. Before a shared bundle is installed, every JSON/YAML file in
it is inspected:

* ``_target_`` paths and every attribute chain in a ``$`` expression (after ``@`` references are
  replaced) must start at an allowlisted root (:data:`ALLOWED_ROOTS`, an alias bound by an allowed
  ``$import``, a harmless builtin from :data:`SAFE_BUILTINS`, or a name bound inside the expression);
* each chain is *resolved* on the real modules, and every module, class or function met on the way must
  live under an allowlisted root (``torch.os`` resolves to :mod:`os` and is refused) and outside the
  known escape hatches in :data:`DENIED_PREFIXES` (``torch.hub``, ``torch.load``, ``monai.bundle`` ...);
* dunder names and private attributes (``__import__``, ``x.__class__``, ``torch._utils``) are refused,
  and so are modules used as values (``[m.os for m in [torch]]`` would bypass the resolution);
* ``allow_pickle`` other than false and ``weights_only`` other than true are refused (pickle loading);
* Python code shipped in the bundle (``*.py``, compiled extensions) is refused: it can shadow trusted
  modules once the bundle root is on ``sys.path``;
* logging INI files (``*.conf``, ``*.ini``), which ``logging.config.fileConfig`` evaluates, may name only
  ``logging`` classes and literal ``args``/``kwargs`` (``sys.stdout``/``sys.stderr`` allowed).

This is a guard against hostile or careless configs, not a sandbox: the allowlisted libraries can still
read and write files. Bundles that need their own code (``scripts/``) are installed with ``--trust``.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "ALLOWED_ROOTS",
    "DENIED_PREFIXES",
    "SAFE_BUILTINS",
    "check_bundle_configs",
    "check_config",
    "check_expression",
    "check_logging_ini",
    "check_target",
]

ALLOWED_ROOTS = ("monai", "medgen_core", "torch", "numpy")
SAFE_BUILTINS = frozenset(
    {"str", "int", "float", "bool", "list", "dict", "tuple", "set", "len", "chr", "ord", "range", "min", "max", "abs",
     "round", "sum", "zip", "enumerate", "sorted", "reversed", "any", "all", "isinstance", "print", "None", "True", "False"}
)
# under an allowed root but able to load pickles, fetch, compile or run code, or run other configs
DENIED_PREFIXES = (
    "torch.hub", "torch.load", "torch.save", "torch.serialization", "torch.package", "torch.utils.cpp_extension",
    "torch.ops", "torch.classes", "torch.distributed.rpc", "torch._dynamo", "torch._inductor",
    "numpy.load", "numpy.save", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.ctypeslib", "numpy.f2py", "numpy.distutils",
    "monai.bundle", "monai.utils.module", "monai.utils.optional_import", "monai.apps.utils", "monai.apps.mmars",
    "monai.apps.nnunet", "monai.apps.auto3dseg", "monai.auto3dseg", "monai.fl", "monai.utils.misc.run_cmd", "monai.utils.run_cmd",
    "medgen_core.bundles.runner", "medgen_core.bundles.sharing", "medgen_core.bundles.monai_checks", "medgen_core.cli",
)
CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".dll", ".dylib", ".pth")
_REF = re.compile(r"@(?:\w*)(?:#\w*)*")  # MONAI's ReferenceResolver.id_matcher
_REF_NAME = "_ref_"
_DEFAULT_ALIASES = {root: root for root in ALLOWED_ROOTS} | {"np": "numpy"}  # ConfigParser's default globals


def _denied(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in DENIED_PREFIXES)


def _allowed_module(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in ALLOWED_ROOTS and not _denied(name)


def _resolve(dotted: str, as_value: bool = False) -> str | None:
    """Why ``dotted`` (``root.attr...``) is refused, or None when every step stays in allowed code.

    With ``as_value``, a chain that ends at a module is refused too (a module passed around as a value
    escapes the per-chain resolution).
    """
    parts = dotted.split(".")
    if any(p.startswith("_") for p in parts):
        return f"'{dotted}' uses a private or dunder name"
    if parts[0] not in ALLOWED_ROOTS:
        return f"'{dotted}' is outside the allowed libraries ({', '.join(ALLOWED_ROOTS)})"
    if _denied(dotted):
        return f"'{dotted}' is a known escape hatch (loads pickles, fetches or runs code, or runs other configs)"
    try:
        obj: Any = importlib.import_module(parts[0])
    except ImportError:
        return f"'{dotted}': {parts[0]} is not installed"
    for i, part in enumerate(parts[1:], start=2):
        prefix = ".".join(parts[:i])
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            try:
                obj = importlib.import_module(prefix)
            except ImportError:
                return f"'{dotted}': '{prefix}' does not exist"
        if inspect.ismodule(obj):
            where = obj.__name__
        elif inspect.isclass(obj) or inspect.isroutine(obj):
            where = getattr(obj, "__module__", None)
        elif callable(obj):
            where = type(obj).__module__
        else:
            continue  # plain data (numbers, dtypes, enum members)
        if not _allowed_module(where):
            return f"'{prefix}' resolves to code in '{where}', outside the allowed libraries"
        qualname = f"{where}.{getattr(obj, '__qualname__', '')}".rstrip(".")
        if _denied(qualname):
            return f"'{prefix}' resolves to '{qualname}', a known escape hatch (loads pickles, fetches or runs code, or runs other configs)"
    if as_value and inspect.ismodule(obj):
        return f"'{dotted}' is a module used as a value; use it only as the start of an attribute chain"
    return None


def _enables_pickle(key: str, value: Any) -> bool:
    return (key == "allow_pickle" and value is not False) or (key == "weights_only" and value is not True)


def check_target(target: str, aliases: dict[str, str] | None = None) -> str | None:
    """Why a ``_target_`` value is refused, or None. Bare names must be MONAI components (``Compose``)."""
    if target.startswith("$"):
        problems = check_expression(target[1:], aliases or {})
        return "; ".join(problems) or None
    if target.startswith("@"):
        return None
    if "." not in target:
        from monai.bundle.config_item import ComponentLocator

        module = ComponentLocator().get_component_module_name(target)
        module = module[0] if isinstance(module, list) and module else module
        return None if isinstance(module, str) and _allowed_module(module) else f"'{target}' is not a MONAI component"
    return _resolve(target)


def _chain(node: ast.AST) -> list[str] | None:
    """``a.b.c`` as ``["a", "b", "c"]`` when ``node`` is an attribute chain rooted at a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id, *reversed(parts)]
    return None


def _imports(tree: ast.AST) -> Iterator[tuple[str, str, str]]:
    """``(bound name, what it is bound to, full path imported)`` for every import statement in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                yield (alias.asname, alias.name, alias.name) if alias.asname else (root, root, alias.name)
        elif isinstance(node, ast.ImportFrom):
            path = f"{'.' * node.level}{node.module or ''}.{{}}"
            for alias in node.names:
                yield alias.asname or alias.name, path.format(alias.name), path.format(alias.name)


def check_expression(expr: str, aliases: dict[str, str]) -> list[str]:
    """Problems with one ``$`` expression (without the ``$``); ``aliases`` maps imported names to modules."""
    code = _REF.sub(_REF_NAME, expr.replace("::", "#")).strip()
    is_import = code.startswith(("import ", "from "))
    try:
        tree = ast.parse(code, mode="exec" if is_import else "eval")
    except SyntaxError as err:
        return [f"not a valid Python expression ({err.msg})"]
    if is_import:
        if not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body):  # type: ignore[attr-defined]
            return ["an import line may hold import statements only"]
        return [p for _, _, imported in _imports(tree) if (p := _resolve(imported))]
    known = _DEFAULT_ALIASES | aliases
    bound = {_REF_NAME} | {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in (*n.args.args, *n.args.kwonlyargs)}
    problems: list[str] = []
    chains_seen: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            problems.append(f"uses the private or dunder attribute '{node.attr}'")
        if isinstance(node, ast.keyword) and node.arg and isinstance(node.value, ast.Constant) and _enables_pickle(node.arg, node.value.value):
            problems.append(f"sets {node.arg}={node.value.value!r}, which allows loading pickles (code)")
        elif isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "weights_only") and not isinstance(node.value, ast.Constant):
            problems.append(f"sets {node.arg} from an expression; only the literal safe value is allowed")
        if isinstance(node, ast.Attribute) and id(node) not in chains_seen:
            chain = _chain(node)
            inner: ast.AST = node
            while isinstance(inner, ast.Attribute):
                chains_seen.add(id(inner))
                inner = inner.value
            if chain and chain[0] in known:
                chains_seen.add(id(inner))
                if problem := _resolve(".".join([known[chain[0]], *chain[1:]]), as_value=True):
                    problems.append(problem)
        elif isinstance(node, ast.Name) and id(node) not in chains_seen:
            if node.id in known:
                if problem := _resolve(known[node.id], as_value=True):
                    problems.append(problem)
            elif node.id.startswith("__"):
                problems.append(f"uses the dunder name '{node.id}'")
            elif node.id not in SAFE_BUILTINS and node.id not in bound:
                problems.append(f"uses the name '{node.id}', which is neither an allowed library nor a harmless builtin")
    return list(dict.fromkeys(problems))


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """``(config id, key, value)`` for every value in a nested config (ids joined with ``#``)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        sub = f"{path}#{key}" if path else str(key)
        yield sub, str(key), value
        yield from _walk(value, sub)


def _import_aliases(config: Any) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for _, _, value in _walk(config):
        if isinstance(value, str) and value.startswith("$") and value[1:].lstrip().startswith(("import ", "from ")):
            try:
                aliases.update((name, target) for name, target, _ in _imports(ast.parse(value[1:].strip())))
            except SyntaxError:
                pass
    return aliases


def check_config(config: Any, name: str, aliases: dict[str, str] | None = None) -> list[str]:
    """Problems in one parsed config, each as ``"<name> id <config id>: <value>: <why>"``."""
    aliases = _import_aliases(config) if aliases is None else aliases
    problems: list[str] = []
    for cid, key, value in _walk(config):
        if key in ("allow_pickle", "weights_only") and not isinstance(value, str) and _enables_pickle(key, value):
            problems.append(f"{name} id '{cid}': sets {key}={value!r}, which allows loading pickles (code)")
        if not isinstance(value, str):
            continue
        why: list[str] = [f"sets {key}={value!r}, which allows loading pickles (code)"] if key in ("allow_pickle", "weights_only") else []
        if key == "_target_":
            why = [w] if (w := check_target(value, aliases)) else []
        elif value.startswith("$"):
            why = check_expression(value[1:], aliases)
        elif value.startswith("%"):
            file_part = value[1:].split("#", 1)[0]
            if file_part and (Path(file_part).is_absolute() or ".." in Path(file_part).parts or "://" in file_part):
                why = ["a '%' macro may only refer to files inside the bundle"]
        problems += [f"{name} id '{cid}': {value!r}: {w}" for w in why]
    return problems


def _is_logging_class(value: str) -> bool:
    """Whether ``value`` names a class of :mod:`logging` or :mod:`logging.handlers` (as ``fileConfig`` reads it)."""
    import logging.handlers

    match = re.fullmatch(r"(?:(logging(?:\.handlers)?)\.)?([A-Za-z]\w*)", value)
    if not match:
        return False
    module = logging.handlers if match.group(1) == "logging.handlers" else logging
    return inspect.isclass(getattr(module, match.group(2), None))


def check_logging_ini(path: str | Path) -> list[str]:
    """Problems in a logging INI file: ``class=`` outside ``logging``, or non-literal ``args=``/``kwargs=``."""
    import configparser

    ini = configparser.ConfigParser(interpolation=None)
    try:
        ini.read(path)
    except configparser.Error as err:
        return [f"{Path(path).name}: cannot be parsed ({str(err).splitlines()[0]})"]
    problems = []
    for section in ini.sections():
        for key, value in ini.items(section):
            value = value.strip()
            if key == "class" and not _is_logging_class(value):
                problems.append(f"{Path(path).name} [{section}] class={value!r}: only logging / logging.handlers classes are allowed")
            elif key in ("args", "kwargs"):
                try:
                    ast.literal_eval(re.sub(r"\bsys\.(stdout|stderr)\b", "None", value))
                except (ValueError, SyntaxError):
                    problems.append(f"{Path(path).name} [{section}] {key}={value!r}: must be a literal (sys.stdout / sys.stderr allowed)")
    return problems


def check_bundle_configs(bundle_root: str | Path, skip_dirs: tuple[str, ...] = ("eval", "runs")) -> list[str]:
    """Every problem in every JSON/YAML file of a bundle, plus any Python code it ships."""
    import yaml

    root = Path(bundle_root)
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).parts[0] not in skip_dirs]
    problems = [f"{p.relative_to(root).as_posix()}: bundles that ship code can only be installed with --trust" for p in files if p.suffix in CODE_SUFFIXES]
    parsed: dict[str, Any] = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            if path.suffix == ".json":
                parsed[rel] = json.loads(path.read_text())
            elif path.suffix in (".yaml", ".yml"):
                parsed[rel] = yaml.safe_load(path.read_text())
        except (ValueError, yaml.YAMLError) as err:
            problems.append(f"{rel}: cannot be parsed ({str(err).splitlines()[0]})")
    for path in (p for p in files if p.suffix in (".conf", ".ini")):
        problems += [f"{path.relative_to(root).as_posix()}: {p.split(': ', 1)[1]}" for p in check_logging_ini(path)]
    aliases: dict[str, str] = {}
    for config in parsed.values():  # configs are merged at run time: an import in one serves all
        aliases.update(_import_aliases(config))
    for rel, config in parsed.items():
        problems += check_config(config, rel, aliases)
    return problems
