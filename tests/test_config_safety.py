"""The config inspection used by ``medgen bundle install`` (medgen_core.bundles.config_safety): a table of
expressions and targets that must be refused or allowed. Nothing here is evaluated."""

from __future__ import annotations

import pytest

from medgen_core.bundles.config_safety import check_config, check_expression, check_logging_ini, check_plain_string, check_target

REFUSED = {
    "__import__('os').system('x')": "dunder name '__import__'",
    "os.system('x')": "name 'os'",
    "eval('1')": "name 'eval'",
    "getattr(torch, 'os')": "name 'getattr'",
    "torch.os.system('x')": "resolves to code in 'os'",
    "medgen_core.bundles.weights.pickle.loads(b'')": "resolves to code in 'pickle'",
    "[m.os for m in [torch]]": "module used as a value",
    "(x := numpy)": "module used as a value",
    "torch._utils._import_dotted_name('os')": "private or dunder",
    "(1).__class__.__bases__": "private or dunder attribute '__class__'",
    "torch.load('m.pt', weights_only=False)": "known escape hatch",
    "torch.hub.load('a', 'b')": "known escape hatch",
    "monai.utils.optional_import('os')[0]": "known escape hatch",
    "monai.bundle.ConfigParser({}).get_parsed_content('x')": "known escape hatch",
    "monai.utils.run_cmd(['ls'])": "known escape hatch",
    "monai.data.NumpyReader(allow_pickle=True)": "allow_pickle=True",
    "import os": "outside the allowed libraries",
    "from torch import os": "resolves to code in 'os'",
    "import torch.hub": "known escape hatch",
    "1 +": "not a valid Python expression",
    # issue 14: file access on a value or through a chain, frame introspection, shell-running helpers, computed reader names
    "_ref_.tofile('x')": "calls '.tofile' on a value",
    "numpy.zeros(3).tofile('x')": "calls '.tofile' on a value",
    "medgen_core.data.samples.mni152_t1_path().unlink()": "calls '.unlink' on a value",
    "numpy.fromfile('/etc/passwd')": "known escape hatch",
    "numpy.memmap('x', mode='w+')": "known escape hatch",
    "numpy.savetxt('x', [1])": "known escape hatch",
    "numpy.lib.format.read_array(None)": "known escape hatch",
    "torch.from_file('x', size=1)": "known escape hatch",
    "numpy.ndarray.tofile": "uses 'tofile'",
    "torch.utils.collect_env.run('touch x')": "known escape hatch",
    "medgen_core.provenance.signing": "known escape hatch",
    "(x for x in [1]).gi_frame.f_globals['__builtins__']['eval']('1')": "introspection attribute 'gi_frame'",
    "{}['__builtins__']": "dunder string",
    "monai.transforms.LoadImage(reader='o' + 's.system', command='x')": "'reader' is given by a computed value",
    "monai.transforms.LoadImage('os.system')": "names code in 'os'",
    "monai.transforms.LoadImage(**{'reader': 'x'})": "passes unpacked arguments",
    "monai.transforms.SaveImage(writer='open')": "builtin open()",
}
ALLOWED = [
    "torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "@bundle_root + '/eval'",
    "@_meta_#name + chr(64) + @_meta_#version",
    "@network_def.to(@device)",
    "[x * 2 for x in range(3)]",
    "lambda d: d['image']",
    "np.zeros(3)",
    "monai.utils.set_determinism(seed=0)",
    "medgen_core.bundles.weights.load_verified_network(@net, @file, @sha, @device)",
    "import torch.distributed as dist",
    "dist.get_rank()",
]


@pytest.mark.parametrize("expr, why", REFUSED.items(), ids=list(REFUSED))
def test_refused_expressions(expr: str, why: str) -> None:
    problems = check_expression(expr, {})
    assert problems and any(why in p for p in problems), problems


@pytest.mark.parametrize("expr", ALLOWED)
def test_allowed_expressions(expr: str) -> None:
    assert check_expression(expr, {"dist": "torch.distributed"}) == []


@pytest.mark.parametrize(
    "value, key, why",
    [
        ("os.system", None, "names code in 'os'"),
        ("subprocess.Popen", None, "names code in 'subprocess'"),
        ("numpy.load", None, "known escape hatch"),
        ("monai.bundle.ConfigWorkflow", None, "known escape hatch"),
        ("torch._C", None, "private"),
        ("open", "reader", "builtin open()"),
        ("notamodule.x", "reader", "names code in 'notamodule'"),
        ("logging.conf", None, None),
        ("model.pt", None, None),
        ("test.json", None, None),
        ("torch.float32", None, None),
        ("monai.data.ITKReader", "reader", None),
        ("ITKReader", "reader", None),
        ("open", "label", None),
        ("$anything", "reader", None),
    ],
)  # fmt: skip
def test_plain_strings(value: str, key: str | None, why: str | None) -> None:
    """Plain strings MONAI may resolve by name (``pydoc.locate``) must stay in the allowlist; data strings pass."""
    problem = check_plain_string(value, key)
    assert (problem is None) if why is None else (problem is not None and why in problem), problem


@pytest.mark.parametrize(
    "config",
    [
        {"t": {"_target_": "LoadImage", "reader": "os.system", "command": "touch x"}},
        {"r": "$'o' + 's.system'", "t": {"_target_": "LoadImage", "reader": "@r"}},
        {"t": {"_target_": "SaveImage", "writer": ["NibabelWriter", "open"]}},
        {"t": {"_target_": "SlidingWindowInferer", "merger_cls": "$chr(111) + 's.system'"}},
        {"t": {"_target_": "Compose", "_mode_": "debug"}},
        {"weights_only": "$False"},
    ],
    ids=["dotted-reader", "reference-to-computed", "builtin-in-list", "computed-merger", "pdb-mode", "computed-weights-only"],
)
def test_name_resolved_positions_and_special_keys(config: dict) -> None:
    assert check_config(config, "configs/inference.json")


def test_clean_name_resolved_positions() -> None:
    config = {"r": "ITKReader", "t": {"_target_": "LoadImage", "reader": "@r"}, "u": {"_target_": "LoadImage", "reader": "$monai.data.ITKReader()"},
              "s": {"_target_": "SaveImage", "writer": "monai.data.NibabelWriter"}}
    assert check_config(config, "configs/inference.json") == []


@pytest.mark.parametrize(
    "target, ok", [("Compose", True), ("medgen_core.networks.RRDBNet", True), ("torch.nn.Conv2d", True), ("os.system", False),
                   ("eval", False), ("builtins.exec", False), ("monai.bundle.ConfigWorkflow", False), ("$torch.os.system", False)],
)  # fmt: skip
def test_targets(target: str, ok: bool) -> None:
    assert (check_target(target) is None) == ok


def test_config_messages_name_file_and_id() -> None:
    config = {"a": [{"_target_": "os.system", "command": "x"}], "b": {"weights_only": False}, "c": "%/etc/passwd.json#x", "d": "%configs/other.json#x",
              "e": "%a#0#command"}
    problems = check_config(config, "configs/inference.json")
    assert problems[0].startswith("configs/inference.json id 'a#0#_target_': 'os.system': ")
    assert any("id 'b#weights_only'" in p and "pickles" in p for p in problems)
    # a file macro loads a config relative to the working folder, unseen by the inspection: refused, even inside the bundle
    assert any("id 'c'" in p and "only refer to ids of the same config" in p for p in problems)
    assert any("id 'd'" in p and "only refer to ids of the same config" in p for p in problems)
    assert not any("id 'e'" in p for p in problems)


def test_logging_ini(tmp_path) -> None:
    good = "[handler_h]\nclass=StreamHandler\nargs=(sys.stdout,)\n[formatter_f]\nclass=logging.Formatter\n"
    bad = "[handler_h]\nclass=__import__('os').system('x')\nargs=(open('/etc/passwd'),)\n"
    (tmp_path / "good.conf").write_text(good)
    (tmp_path / "bad.conf").write_text(bad)
    assert check_logging_ini(tmp_path / "good.conf") == []
    # a FileHandler truncates any file when fileConfig starts; a handler given as a formatter gets the format string as its file name
    for evil in ("[handler_h]\nclass=FileHandler\nargs=('/tmp/victim', 'w')\n", "[formatter_f]\nclass=logging.FileHandler\nformat=/tmp/victim\n",
                 "[handler_h]\nclass=logging.handlers.SocketHandler\nargs=('example.org', 9)\n"):
        (tmp_path / "evil.conf").write_text(evil)
        assert any("only" in p and "is allowed here" in p for p in check_logging_ini(tmp_path / "evil.conf")), evil
    problems = check_logging_ini(tmp_path / "bad.conf")
    assert len(problems) == 2 and "class=" in problems[0] and "args=" in problems[1]
