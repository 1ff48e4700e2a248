"""Open a bundle's configs, the one way every route does it (runner, CLI commands, generators, checks, scripts).

:func:`open_bundle_config` inspects the bundle (:func:`~medgen_core.bundles.inspection.require_inspected`;
built-in bundles are trusted) before MONAI reads anything, then builds MONAI's own
:class:`~monai.bundle.ConfigParser` the way :class:`~monai.bundle.ConfigWorkflow` does: ``configs/metadata.json``
under ``_meta_``, the config files in order, then the overrides: ``bundle_root``, the ``device`` as a
:class:`torch.device` and every user value as a literal (:mod:`medgen_core.bundles.overrides`). Errors that
MONAI wraps while it evaluates an expression (a :class:`~medgen_core.errors.MedGenError` raised inside the
config, e.g. weights whose sha256 does not match) come out unwrapped, as one line. The same files and values
make the :class:`~monai.bundle.ConfigWorkflow` of ``python -m monai.bundle run``
(:meth:`BundleConfig.workflow`).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medgen_core.bundles.catalog import BundleInfo, get_bundle
from medgen_core.bundles.inspection import require_inspected
from medgen_core.bundles.overrides import check_override_id, literal_overrides, torch_device
from medgen_core.errors import BundleError, MedGenError

__all__ = ["open_bundle_config", "unwrapped_errors", "user_error_in"]

ConfigName = str | Path


def user_error_in(err: BaseException | None) -> MedGenError | None:
    """The first :class:`MedGenError` in an exception's cause/context chain (MONAI wraps errors raised in configs)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, MedGenError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextlib.contextmanager
def unwrapped_errors() -> Iterator[None]:
    """Re-raise the :class:`MedGenError` inside an exception MONAI raised (one clear line), else the exception itself."""
    try:
        yield
    except MedGenError:
        raise
    except Exception as err:
        user_error = user_error_in(err)
        if user_error is not None:
            raise user_error from None
        raise


def _config_path(info: BundleInfo, name: ConfigName) -> Path:
    """``"inference"`` -> ``configs/inference.json``; ``"lab.json"`` -> ``configs/lab.json``; a :class:`Path` as it is."""
    if isinstance(name, Path):
        if not name.is_file():
            raise BundleError(f"bundle {info.name}: config file {name} does not exist.")
        return name
    if Path(name).suffix in (".json", ".yaml", ".yml"):
        path = info.path / "configs" / name
        if not path.is_file():
            raise BundleError(f"bundle {info.name}: configs/{name} is missing.")
        return path
    return info.config(name)


@functools.cache
def _parser_class() -> type:
    """:class:`BundleConfig`, made on first use so that importing this module does not import MONAI."""
    from monai.bundle import ConfigParser

    class BundleConfig(ConfigParser):
        """MONAI's ConfigParser over a bundle's configs (see :func:`open_bundle_config`); parsing errors come out unwrapped."""

        info: BundleInfo
        config_files: list[Path]
        meta_file: Path
        override_values: dict[str, Any]

        def get_parsed_content(self, id: str = "", **kwargs: Any) -> Any:  # noqa: A002 - MONAI's signature
            with unwrapped_errors():
                return super().get_parsed_content(id, **kwargs)

        def workflow(self, workflow_type: str = "infer") -> Any:
            """MONAI's :class:`~monai.bundle.ConfigWorkflow` over the same files and override values, with the bundle's
            ``configs/logging.conf`` when it has one (inspected with the configs) and its root on ``sys.path``."""
            from monai.bundle import ConfigWorkflow

            root = str(self.info.path)
            if root not in sys.path:  # bundle-local scripts/ must import before ConfigWorkflow.run() adds the root itself
                sys.path.insert(0, root)
            logging_file = self.info.path / "configs" / "logging.conf"
            try:
                return ConfigWorkflow(config_file=[str(p) for p in self.config_files], meta_file=str(self.meta_file),
                                      logging_file=str(logging_file) if logging_file.is_file() else None, workflow_type=workflow_type,
                                      **self.override_values)
            except (KeyError, ValueError, IndexError) as err:  # an override id that does not fit the config
                raise BundleError(f"bundle {self.info.name}: cannot apply the overrides {sorted(self.override_values)}: {err}") from None

    BundleConfig.__module__ = __name__
    return BundleConfig


def open_bundle_config(
    bundle: str | Path | BundleInfo,
    configs: ConfigName | Sequence[ConfigName] = "inference",
    overrides: Mapping[str, Any] | None = None,
    device: Any = None,
    trust: bool = False,
    expressions: Mapping[str, Any] | None = None,
) -> Any:
    """MONAI's parser over ``bundle``'s configs, with metadata, ``bundle_root``, device and overrides set.

    Args:
        bundle: bundle name, bundle folder, or :class:`BundleInfo`.
        configs: one config or several, merged in order: a name under ``configs/`` (``"inference"`` means
            ``inference.json``; ``"lab.json"``), or a :class:`~pathlib.Path` to any config file (a user's own).
        overrides: config ids and values, handed over as literals (a path named ``$...`` stays a path);
            None values are skipped. A ``device`` here or in ``device`` (``"cpu"``, ``"cuda:1"``,
            ``"$torch.device('cpu')"`` or a :class:`torch.device`) becomes a :class:`torch.device`.
        device: the device override, when not None.
        trust: parse even if the configs fail the inspection (the user's explicit ``--trust``).
        expressions: ids whose values MONAI interprets (``$``, ``@``); each must come from
            :func:`~medgen_core.bundles.overrides.expert_override`, which inspects it.

    Returns:
        A ``BundleConfig``: a :class:`monai.bundle.ConfigParser` whose ``get_parsed_content`` raises the
        :class:`MedGenError` inside MONAI's wrapper, and whose ``workflow(type)`` makes the ConfigWorkflow.

    Raises:
        BundleError: unknown bundle, a missing config, configs that fail the inspection, an override id that does
            not fit the config.
    """
    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    require_inspected(info, trust=trust)  # before MONAI reads any config
    names = [configs] if isinstance(configs, (str, Path)) else list(configs)
    files = [_config_path(info, name) for name in names]
    values = {**dict(overrides or {}), "bundle_root": str(info.path)}
    if device is not None:
        values["device"] = device
    if values.get("device") is not None:
        values["device"] = torch_device(values["device"])
    values = {**literal_overrides(values), **{check_override_id(k): v for k, v in (expressions or {}).items()}}
    parser = _parser_class()()
    parser.info, parser.config_files, parser.meta_file, parser.override_values = info, files, info.path / "configs" / "metadata.json", values
    parser.read_config([str(p) for p in files])
    parser.read_meta(str(parser.meta_file))
    try:
        parser.update(values)
    except (KeyError, ValueError, IndexError) as err:  # an override id that does not fit the config
        raise BundleError(f"bundle {info.name}: cannot apply the overrides {sorted(values)}: {err}") from None
    return parser
