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
* attributes that read or write files are refused on any receiver, resolvable or not
  (:data:`FILE_ACCESS_ATTRIBUTES`: ``x.tofile``, ``np.fromfile``, ``torch.from_file``, ``path.unlink`` ...);
* every *plain* string that names importable code (``"os.system"``, ``"pkg.mod.Func"``) must resolve
  inside the allowlist too (:func:`check_plain_string`): MONAI resolves some strings by name with
  ``pydoc.locate`` (``LoadImage(reader=...)``, ``SaveImage(writer=...)``, ``merger_cls``); at those
  positions (:data:`NAME_RESOLVED_KEYS`, as config keys or call keywords) a builtin name (``"open"``) or
  a string computed by an expression is refused as well;
* ``%`` macros may only refer to ids of the same config (a file macro loads a config relative to the
  working folder, which the inspection never sees), and ``_mode_: debug`` (pdb) is refused;
* ``allow_pickle`` other than false and ``weights_only`` other than true are refused (pickle loading);
* Python code shipped in the bundle (``*.py``, compiled extensions) is refused: it can shadow trusted
  modules once the bundle root is on ``sys.path``; so are symbolic links inside the bundle (they can
  point at code or files the inspection does not see);
* logging INI files (``*.conf``, ``*.ini``), which ``logging.config.fileConfig`` evaluates, may name only
  stream handlers and formatters, with literal ``args``/``kwargs`` (:mod:`.logging_safety`);
* frame and code introspection (``gen.gi_frame.f_globals``, ``tb_frame`` ...) and dunder strings
  (``x['__builtins__']``) are refused, since they reach the interpreter's globals without a dunder
  attribute.

Nothing is evaluated or imported from outside the allowlist while checking: allowlisted modules are
imported to resolve names, other names are only looked up with :func:`importlib.util.find_spec`.
This is a guard against hostile or careless configs, not a sandbox: the allowlisted libraries can still
read and write files (MedGen's own writers, MONAI's savers). Bundles that need their own code
(``scripts/``) are installed with ``--trust``. Which routes run this inspection:
:mod:`medgen_core.bundles.inspection`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

from medgen_core.bundles.logging_safety import check_logging_ini

__all__ = [
    "ALLOWED_ROOTS",
    "DENIED_PREFIXES",
    "FILE_ACCESS_ATTRIBUTES",
    "INTROSPECTION_ATTRIBUTES",
    "NAME_RESOLVED_KEYS",
    "SAFE_BUILTINS",
    "check_bundle_configs",
    "check_config",
    "config_lookup",
    "check_expression",
    "check_logging_ini",
    "check_plain_string",
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
    "torch.from_file", "torch.jit.load", "torch.jit.save", "torch.jit._serialization", "torch.onnx", "torch.export", "torch.fx",
    "torch.compile", "torch.multiprocessing", "torch.utils.tensorboard", "torch.utils.model_zoo", "torch.utils.data.datapipes",
    "torch.utils.benchmark", "torch.utils.collect_env", "torch.utils.hipify", "torch.utils.bottleneck", "torch.utils.file_baton",
    "torch.utils.show_pickle", "torch.distributed.checkpoint", "torch.distributed.launcher", "torch.distributed.run",
    "torch.distributed.elastic", "torch.backends.xeon", "torch.profiler", "torch.autograd.profiler",
    "numpy.load", "numpy.save", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.ctypeslib", "numpy.f2py", "numpy.distutils",
    "numpy.fromfile", "numpy.memmap", "numpy.loadtxt", "numpy.savetxt", "numpy.genfromtxt", "numpy.fromregex", "numpy.lib.format",
    "numpy.lib._format_impl", "numpy.lib._datasource", "numpy.testing",
    "monai.bundle", "monai.utils.module", "monai.utils.optional_import", "monai.apps.utils", "monai.apps.mmars",
    "monai.apps.nnunet", "monai.apps.auto3dseg", "monai.apps.datasets", "monai.apps.tcia", "monai.auto3dseg", "monai.fl",
    "monai.utils.misc.run_cmd", "monai.utils.run_cmd", "monai.data.torchscript_utils",
    "medgen_core.bundles.runner", "medgen_core.bundles.sharing", "medgen_core.bundles.monai_checks", "medgen_core.bundles.zoo_verify", "medgen_core.bundles.zoo_rules", "medgen_core.bundles.zoo_medgen_checks", "medgen_core.bundles.zoo_ci", "medgen_core.bundles.large_files", "medgen_core.bundles.inspection",
    "medgen_core.bundles.zoo_index", "medgen_core.experiments",
    "medgen_core.bundles.overrides", "medgen_core.bundles.conformance", "medgen_core.bundles.generators", "medgen_core.augmentation",
    "medgen_core.provenance.signing", "medgen_core.provenance.trust", "medgen_core.cli",
)
# attribute names that reach frames, code objects and so the interpreter's globals without a dunder
INTROSPECTION_ATTRIBUTES = frozenset(
    {"gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await", "ag_frame", "ag_code", "ag_await", "f_globals",
     "f_locals", "f_builtins", "f_back", "f_code", "tb_frame", "tb_next", "func_globals", "func_code"}
)
# attribute names refused on any receiver (a value whose type the inspection cannot know): they read or write files
FILE_ACCESS_ATTRIBUTES = frozenset(
    {"tofile", "fromfile", "dump", "save", "savez", "savez_compressed", "savetxt", "load", "loadtxt", "genfromtxt", "fromregex",
     "memmap", "open_memmap", "from_file", "open", "write_text", "write_bytes", "read_text", "read_bytes", "unlink", "rmdir",
     "rmtree", "touch", "rename", "replace", "symlink_to", "hardlink_to", "chmod", "system", "popen"}
)
# config keys / call keywords whose string value MONAI resolves by name (pydoc.locate / optional_import)
NAME_RESOLVED_KEYS = ("reader", "writer", "merger_cls")
# a plain string ending like this names a file, not code (even when its first part is an importable module)
_DATA_SUFFIXES = frozenset(
    {"json", "yaml", "yml", "conf", "ini", "txt", "md", "csv", "nii", "gz", "nrrd", "nhdr", "mha", "mhd", "raw", "dcm", "png", "jpg",
     "pt", "pth", "ts", "safetensors", "onnx", "npz", "npy", "zip", "log", "sha256", "bin", "ckpt", "h5", "tsv"}
)
_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
CODE_SUFFIXES = (".py", ".pyc", ".so", ".pyd", ".dll", ".dylib", ".pth")
_REF = re.compile(r"@(?:\w*)(?:#\w*)*")  # MONAI's ReferenceResolver.id_matcher
_REF_NAME = "_ref_"
Lookup = Callable[[str], Any]  # raw config value of an id (for following @references), or _MISSING
_DEFAULT_ALIASES = {root: root for root in ALLOWED_ROOTS} | {"np": "numpy"}  # ConfigParser's default globals


def _denied(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in DENIED_PREFIXES)


def _allowed_module(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in ALLOWED_ROOTS and not _denied(name)


def _resolve(dotted: str, as_value: bool = False, missing_ok: bool = False) -> str | None:
    """Why ``dotted`` (``root.attr...``) is refused, or None when every step stays in allowed code.

    With ``as_value``, a chain that ends at a module is refused too (a module passed around as a value
    escapes the per-chain resolution). With ``missing_ok``, a chain that does not resolve is not a
    problem (a plain string that merely looks dotted names nothing MONAI could load).
    """
    return _lookup(dotted, as_value, missing_ok)[1]


def _lookup(dotted: str, as_value: bool = False, missing_ok: bool = False) -> tuple[Any, str | None]:
    """``(object, problem)`` for ``dotted``: what :func:`_resolve` checks, plus the object reached (None if refused)."""
    parts = dotted.split(".")
    if any(p.startswith("_") for p in parts):
        return None, f"'{dotted}' uses a private or dunder name"
    if parts[0] not in ALLOWED_ROOTS:
        return None, f"'{dotted}' is outside the allowed libraries ({', '.join(ALLOWED_ROOTS)})"
    if _denied(dotted):
        return None, f"'{dotted}' is a known escape hatch (loads pickles, reads or writes files, fetches or runs code, or runs other configs)"
    try:
        obj: Any = importlib.import_module(parts[0])
    except ImportError:
        return None, None if missing_ok else f"'{dotted}': {parts[0]} is not installed"
    for i, part in enumerate(parts[1:], start=2):
        prefix = ".".join(parts[:i])
        if hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            try:
                obj = importlib.import_module(prefix)
            except ImportError:
                return None, None if missing_ok else f"'{dotted}': '{prefix}' does not exist"
        if inspect.ismodule(obj):
            where = obj.__name__
        elif inspect.isclass(obj) or inspect.isroutine(obj):  # a C method descriptor names its class instead of a module
            where = getattr(obj, "__module__", None) or getattr(getattr(obj, "__objclass__", None), "__module__", None)
        elif callable(obj):
            where = type(obj).__module__
        else:
            continue  # plain data (numbers, dtypes, enum members)
        if not _allowed_module(where):
            return None, f"'{prefix}' resolves to code in '{where}', outside the allowed libraries"
        qualname = f"{where}.{getattr(obj, '__qualname__', '')}".rstrip(".")
        if _denied(qualname):
            return None, f"'{prefix}' resolves to '{qualname}', a known escape hatch (loads pickles, reads or writes files, fetches or runs code, or runs other configs)"
    if denied := [p for p in parts[1:] if p in FILE_ACCESS_ATTRIBUTES]:
        return None, f"'{dotted}' uses '{denied[0]}', which reads or writes files or runs commands"
    if as_value and inspect.ismodule(obj):
        return None, f"'{dotted}' is a module used as a value; use it only as the start of an attribute chain"
    return obj, None


def check_plain_string(value: str, key: str | None = None) -> str | None:
    """Why a plain (not ``$``/``@``/``%``) config string is refused, or None.

    MONAI resolves some strings by name (``pydoc.locate``): a string that names importable code must
    resolve inside the allowlist. Outside the allowlist nothing is imported: a first part that
    :func:`importlib.util.find_spec` finds is enough to refuse, unless the string ends like a file name
    (``logging.conf``). At a :data:`NAME_RESOLVED_KEYS` position a bare builtin name (``"open"``) is
    refused as well, since ``locate`` finds builtins.
    """
    if not isinstance(value, str) or value.startswith(("$", "@", "%")):
        return None
    if not _DOTTED.fullmatch(value):
        if key in NAME_RESOLVED_KEYS and value.isidentifier() and hasattr(builtins, value):
            return f"'{value}' at '{key}' would be resolved by name to the builtin {value}()"
        return None
    parts = value.split(".")
    if parts[0] in ALLOWED_ROOTS:
        problem = _resolve(value, missing_ok=True)
        return f"{problem} (MONAI resolves dotted strings by name, e.g. a reader or writer)" if problem else None
    if parts[-1].lower() in _DATA_SUFFIXES and key not in NAME_RESOLVED_KEYS:
        return None
    try:
        found = parts[0] in sys.modules or importlib.util.find_spec(parts[0]) is not None
    except (ImportError, ValueError):
        found = False
    if found or key in NAME_RESOLVED_KEYS:
        return (f"'{value}' names code in '{parts[0]}', outside the allowed libraries ({', '.join(ALLOWED_ROOTS)}); "
                "MONAI resolves dotted strings by name (e.g. LoadImage(reader=...))")
    return None


_MISSING = object()


def _name_value_problem(key: str, value: Any, lookup: Lookup | None, aliases: dict[str, str], depth: int = 0) -> str | None:
    """Why ``value`` at a :data:`NAME_RESOLVED_KEYS` position is refused: a string MONAI would resolve by
    name must be plain (and pass :func:`check_plain_string`), or an ``@`` reference to such a value, or an
    object (a component, a class or a call of allowed code); a string computed by an expression is refused."""
    if depth > 8:
        return f"'{key}': references nest too deeply to be checked"
    if isinstance(value, (list, tuple)):
        return next((p for v in value if (p := _name_value_problem(key, v, lookup, aliases, depth + 1))), None)
    if not isinstance(value, str):
        return None  # a component dict (its _target_ is checked), None, a number
    if value.startswith("@") and _REF.fullmatch(value.replace("::", "#")):
        target = lookup(value[1:]) if lookup else _MISSING
        return None if target is _MISSING else _name_value_problem(key, target, lookup, aliases, depth + 1)
    if not value.startswith("$"):
        return check_plain_string(value, key)
    try:
        node = ast.parse(_REF.sub(_REF_NAME, value[1:].replace("::", "#")).strip(), mode="eval").body
    except SyntaxError:
        return None  # reported by check_expression
    return _name_node_problem(key, node, aliases)


def _name_node_problem(key: str, node: ast.AST, aliases: dict[str, str]) -> str | None:
    """:func:`_name_value_problem` for an expression node (a keyword argument or a whole ``$`` value)."""
    if isinstance(node, ast.Constant):
        return check_plain_string(node.value, key) if isinstance(node.value, str) else None
    if isinstance(node, (ast.List, ast.Tuple)):
        return next((p for e in node.elts if (p := _name_node_problem(key, e, aliases))), None)
    func = node.func if isinstance(node, ast.Call) else node
    chain = _chain(func) if isinstance(func, (ast.Attribute, ast.Name)) else None
    if chain and chain[0] in (_DEFAULT_ALIASES | aliases):
        return None  # a class or an instance of allowed code (the chain itself is checked by check_expression)
    return (f"'{key}' is given by a computed value; MONAI resolves a string there by name, so it must be a plain name, "
            "an @reference to one, or a reader/writer object of the allowed libraries")


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
        if isinstance(node, ast.Attribute) and node.attr in INTROSPECTION_ATTRIBUTES:
            problems.append(f"uses the introspection attribute '{node.attr}' (frames and code objects reach the interpreter's globals)")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"__\w+__", node.value):
            problems.append(f"uses the dunder string {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr in FILE_ACCESS_ATTRIBUTES and not ((c := _chain(node)) and c[0] in known):
            problems.append(f"calls '.{node.attr}' on a value, which reads or writes files or runs commands (refused on any receiver)")
        if isinstance(node, ast.Call):
            problems += _call_name_problems(node, known)
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


def _call_name_problems(call: ast.Call, known: dict[str, str]) -> list[str]:
    """Arguments of ``call`` that MONAI would resolve by name (:data:`NAME_RESOLVED_KEYS`): by keyword
    always; by position or ``*``/``**`` unpacking when the callee resolves to allowed code with such a parameter."""
    problems = [p for kw in call.keywords if kw.arg in NAME_RESOLVED_KEYS and (p := _name_node_problem(kw.arg, kw.value, known))]
    chain = _chain(call.func) if isinstance(call.func, (ast.Attribute, ast.Name)) else None
    if not chain or chain[0] not in known:
        return problems
    obj, _ = _lookup(".".join([known[chain[0]], *chain[1:]]), missing_ok=True)
    try:
        params = list(inspect.signature(obj).parameters.values()) if callable(obj) else []
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params]
    if not any(n in NAME_RESOLVED_KEYS for n in names):
        return problems
    if any(isinstance(a, ast.Starred) for a in call.args) or any(kw.arg is None for kw in call.keywords):
        problems.append(f"passes unpacked arguments to '{'.'.join(chain)}', whose {'/'.join(n for n in names if n in NAME_RESOLVED_KEYS)} "
                        "MONAI resolves by name; give them by keyword")
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for name, arg in zip(positional, call.args):
        if name in NAME_RESOLVED_KEYS and (p := _name_node_problem(name, arg, known)):
            problems.append(p)
    return problems


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


def config_lookup(config: Any) -> Lookup:
    """A function from a config id (``a#b`` or ``a::b``) to its raw value in ``config``, or :data:`_MISSING`."""

    def lookup(config_id: str) -> Any:
        node = config
        for part in config_id.replace("::", "#").split("#"):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return _MISSING
        return node

    return lookup


_MODES = ("default", "callable", "partial")  # MONAI's _mode_ values, without "debug" (pdb)


def check_config(config: Any, name: str, aliases: dict[str, str] | None = None, lookup: Lookup | None = None) -> list[str]:
    """Problems in one parsed config, each as ``"<name> id <config id>: <value>: <why>"``.

    ``lookup`` resolves ``@`` references (default: within ``config``); see :func:`config_lookup`.
    """
    aliases = _import_aliases(config) if aliases is None else aliases
    lookup = lookup or config_lookup(config)
    problems: list[str] = []
    for cid, key, value in _walk(config):
        why: list[str] = []
        if key in ("allow_pickle", "weights_only") and _enables_pickle(key, value):
            why.append(f"sets {key}={value!r}, which allows loading pickles (code); only the literal {key == 'weights_only'} is allowed")
        if key == "_mode_" and value not in _MODES:
            why.append(f"_mode_ must be one of {', '.join(_MODES)} ('debug' runs the debugger)")
        if key in NAME_RESOLVED_KEYS and (w := _name_value_problem(key, value, lookup, aliases)):
            why.append(w)
        if isinstance(value, str):
            if key == "_target_":
                why += [w] if (w := check_target(value, aliases)) else []
            elif value.startswith("$"):
                why += check_expression(value[1:], aliases)
            elif value.startswith("%"):
                from monai.bundle import ConfigParser

                if ConfigParser.split_path_id(value[1:])[0]:  # MONAI's own split: a file part ends in .json/.yaml/.yml
                    why.append("a '%' macro may only refer to ids of the same config (a file macro loads a config relative to the working "
                               "folder, which this inspection cannot see)")
            elif key not in NAME_RESOLVED_KEYS and (w := check_plain_string(value, key)):
                why.append(w)
        problems += [f"{name} id '{cid}': {value!r}: {w}" for w in dict.fromkeys(why)]
    return problems


def check_bundle_configs(bundle_root: str | Path, skip_dirs: tuple[str, ...] = ("eval", "runs")) -> list[str]:
    """Every problem in every JSON/YAML file of a bundle, plus any Python code it ships."""
    import yaml

    root = Path(bundle_root)
    entries = [p for p in sorted(root.rglob("*")) if p.relative_to(root).parts[0] not in skip_dirs]
    files = [p for p in entries if p.is_file() and not p.is_symlink()]
    problems = [f"{p.relative_to(root).as_posix()}: bundles that ship code can only be installed with --trust" for p in files if p.suffix in CODE_SUFFIXES]
    problems += [f"{p.relative_to(root).as_posix()}: a symbolic link inside the bundle (it can point at code or files outside it); "
                 "copy the file in instead" for p in entries if p.is_symlink()]
    parsed: dict[str, Any] = {}
    for path in files:
        rel = path.relative_to(root).as_posix()
        try:
            if path.suffix == ".json":
                parsed[rel] = json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix in (".yaml", ".yml"):
                parsed[rel] = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (ValueError, yaml.YAMLError) as err:
            problems.append(f"{rel}: cannot be parsed ({str(err).splitlines()[0]})")
    for path in (p for p in files if p.suffix in (".conf", ".ini")):
        problems += [f"{path.relative_to(root).as_posix()}: {p.split(': ', 1)[1]}" for p in check_logging_ini(path)]
    aliases: dict[str, str] = {}
    for config in parsed.values():  # configs are merged at run time: an import in one serves all
        aliases.update(_import_aliases(config))
    merged: dict[str, Any] = {}
    for rel, config in parsed.items():  # what ConfigWorkflow sees: the configs' top-level ids, metadata under _meta_
        if rel.startswith("configs/") and isinstance(config, dict) and rel != "configs/metadata.json":
            merged.update(config)
    merged["_meta_"] = parsed.get("configs/metadata.json", {})
    lookup = config_lookup(merged)
    for rel, config in parsed.items():
        problems += check_config(config, rel, aliases, lookup)
    return problems
