"""Share bundles safely: ``pack`` a bundle into a checksummed zip, ``install`` one after verifying it.

Archive layout (compatible with ``monai.bundle.download``, which expects ``<name>/`` inside the zip)::

    <name>_v<version>.zip
      checksums.sha256          sha256 of every other member ("<hex>  <path>", as sha256sum writes)
      <name>/configs/metadata.json, <name>/models/model.pt, ...

``install`` refuses an archive whose members escape the target (absolute paths, ``..``, links), that
unpacks to too much (:data:`MAX_UNPACKED_BYTES` in all, :data:`MAX_MEMBER_BYTES` per member, a
compression ratio over :data:`MAX_RATIO`; counted on the bytes actually read, so a member whose
declared size lies is caught too), whose files do not match the manifest (changed, missing or extra),
whose weights do not match the sha256s in its metadata, whose name is a built-in bundle's (unless
``allow_builtin_name``), whose sha256 differs from the one the caller expects (``expected_sha256``), or
(unless ``trust``) whose configs call code outside the allowlisted libraries
(:mod:`medgen_core.bundles.config_safety`) or whose weights' sha256s are recorded nowhere in its metadata
(Model Zoo bundles record none; they are still loaded with ``weights_only=True``). A bundle is keyed by
its folder name (the folder inside the archive, or the folder installed); the metadata ``name`` is a label. Packed and installed bundles are recorded in a
local zoo index, ``<user bundle dir>/model_info.json`` (:mod:`medgen_core.bundles.zoo_index`), shaped like the MONAI model zoo's
``model_info.json``; a bundle installed with ``trust`` has the digest of the configs the user trusted
recorded there (:mod:`medgen_core.bundles.inspection`). Every ``.pt``/``.pth``/``.safetensors`` file is
loaded once with ``weights_only=True`` after the sha256 checks, so a checkpoint that carries a pickle
payload is refused at install (and again when a bundle runs), never executed.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from medgen_core.bundles.catalog import BundleInfo, builtin_bundle_names, get_bundle, read_metadata, user_bundle_dir
from medgen_core.bundles.config_safety import check_bundle_configs
from medgen_core.bundles.inspection import config_digest
from medgen_core.bundles.conformance import EXCLUDED_TOP_DIRS, bundle_files
from medgen_core.bundles.weights import load_state_dict_safely, weight_files, weights_status
from medgen_core.bundles.zoo_index import record_in_index
from medgen_core.errors import BundleError, WeightsError
from medgen_core.provenance import sha256_file

__all__ = ["MANIFEST_NAME", "MAX_MEMBER_BYTES", "MAX_RATIO", "MAX_UNPACKED_BYTES", "install_bundle", "pack_bundle"]

MANIFEST_NAME = "checksums.sha256"
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBER_BYTES = 4 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed size of one member (zeros deflate ~1000:1, weights ~1.1:1, JSON ~5:1)
_RATIO_FLOOR = 1024**2  # members smaller than this may compress as well as they like
_CHUNK = 1024**2
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def _safe_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or ".." in value:
        raise BundleError(f"bundle {what} {value!r} is not filename-safe (letters, digits, '_', '.', '+', '-'); refusing it.")
    return value


def _file_mode() -> int:
    """Permissions of a new file under the current umask (``mkstemp`` would leave 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# -- pack ----------------------------------------------------------------------------------------------
def pack_bundle(bundle: str | Path | BundleInfo, out_dir: str | Path | None = None, index_dir: str | Path | None = None) -> Path:
    """Write ``<out_dir>/<name>_v<version>.zip`` (atomically) with a ``checksums.sha256`` manifest.

    ``eval/``, ``runs/``, ``__pycache__`` and temporary files are left out. Packing is refused when the
    weights do not match the sha256s in the metadata (state not ``OK``). The archive is recorded in the
    local zoo index.

    Args:
        bundle: bundle name, folder or :class:`BundleInfo`.
        out_dir: where the zip goes (default: the current folder).
        index_dir: folder of the local zoo index (default: :func:`user_bundle_dir`).
    """
    info = bundle if isinstance(bundle, BundleInfo) else get_bundle(bundle)
    name, version = _safe_name(info.name, "name"), _safe_name(info.version, "version")
    state, problems = weights_status(info.path, info.metadata)
    if state != "OK":  # install would refuse the archive
        raise BundleError(f"bundle {name}: weights cannot be verified against configs/metadata.json ({state}); refusing to pack it:\n  " + "\n  ".join(problems))
    files = bundle_files(info.path)
    links = [p for p in files if p.is_symlink()]
    if links:
        raise BundleError(f"bundle {name}: symbolic links cannot be packed: {', '.join(str(p) for p in links)}")
    out = Path(out_dir or ".").resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{name}_v{version}.zip"
    members = [(p, f"{name}/{p.relative_to(info.path).as_posix()}") for p in files]
    manifest = "".join(f"{sha256_file(p)}  {arc}\n" for p, arc in members)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".tmp-{target.name}-")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST_NAME, manifest)
            for path, arc in members:
                zf.write(path, arc)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    record_in_index(name, version, sha256_file(target), str(target), index_dir, packed_from=str(info.path))
    return target


# -- install -------------------------------------------------------------------------------------------
def _member_problem(member: zipfile.ZipInfo) -> str | None:
    name = member.filename
    parts = PurePosixPath(name).parts
    if name.startswith("/") or "\\" in name or re.match(r"^[A-Za-z]:", name):
        return f"{name!r}: absolute or Windows path"
    if ".." in parts:
        return f"{name!r}: contains '..'"
    if stat.S_ISLNK(member.external_attr >> 16):
        return f"{name!r}: symbolic link"
    return None


def _extract(archive: Path, into: Path, max_total: int = MAX_UNPACKED_BYTES, max_member: int = MAX_MEMBER_BYTES) -> None:
    """Extract ``archive`` into ``into`` member by member, counting the bytes actually read."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise BundleError(f"{archive}: not a readable zip archive ({err}).") from None
    with zf:
        members = zf.infolist()
        bad = [p for m in members if (p := _member_problem(m))]
        names = [m.filename for m in members]
        if len(set(names)) != len(names):
            bad.append("duplicate member names")
        if bad:
            raise BundleError(f"{archive}: unsafe archive member(s), refusing to extract: " + "; ".join(bad))
        if sum(m.file_size for m in members) > max_total:
            raise BundleError(f"{archive}: unpacks to more than {max_total / 1024**2:.0f} MiB; refusing it.")
        for m in members:
            if m.file_size > max_member:
                raise BundleError(f"{archive}: member {m.filename!r} unpacks to {m.file_size} bytes, over the {max_member / 1024**2:.0f} MiB limit per file; refusing it.")
            if m.file_size > _RATIO_FLOOR and m.file_size > MAX_RATIO * max(m.compress_size, 1):
                raise BundleError(f"{archive}: member {m.filename!r} would expand {m.file_size / max(m.compress_size, 1):.0f} times "
                                  f"(over {MAX_RATIO}:1, a zip bomb?); refusing it.")
        total = 0
        for m in members:
            target = into.joinpath(*PurePosixPath(m.filename).parts)
            if m.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                with zf.open(m) as src, open(target, "xb") as dst:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        total += len(chunk)
                        if written > min(m.file_size, max_member) or total > max_total:
                            raise BundleError(f"{archive}: member {m.filename!r} unpacks to more than it declares ({m.file_size} bytes) "
                                              "or than the size limits; refusing the archive.")
                        dst.write(chunk)
            except BundleError:
                raise
            except (zipfile.BadZipFile, EOFError, zlib.error, OSError, NotImplementedError, RuntimeError, ValueError) as err:
                why = (str(err).splitlines() or [type(err).__name__])[0]
                raise BundleError(f"{archive}: member {m.filename!r} cannot be extracted ({type(err).__name__}: {why}); the archive is "
                                  "corrupt or its recorded sizes lie; refusing it.") from None
            if written != m.file_size:
                raise BundleError(f"{archive}: member {m.filename!r} declares {m.file_size} bytes but holds {written}; refusing the archive.")


def _verify_manifest(root: Path) -> list[str]:
    """Problems of the files under ``root`` against ``root/checksums.sha256``."""
    manifest = root / MANIFEST_NAME
    expected: dict[str, str] = {}
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        m = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](.+)", line.strip())
        if not m or m.group(2).startswith("/") or ".." in PurePosixPath(m.group(2)).parts:
            return [f"{MANIFEST_NAME} line {n} is malformed: {line!r}"]
        expected[m.group(2)] = m.group(1).lower()
    actual = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p != manifest}
    problems = [f"{rel}: listed in {MANIFEST_NAME} but missing" for rel in sorted(set(expected) - actual)]
    problems += [f"{rel}: present but not listed in {MANIFEST_NAME}" for rel in sorted(actual - set(expected))]
    for rel in sorted(actual & set(expected)):
        if (found := sha256_file(root / rel)) != expected[rel]:
            problems.append(f"{rel}: sha256 {found} does not match {expected[rel]} in {MANIFEST_NAME} (changed or corrupted)")
    return problems


def _bundle_root(staging: Path) -> Path:
    if (staging / "configs" / "metadata.json").is_file():
        return staging
    candidates = [d for d in staging.iterdir() if d.is_dir() and (d / "configs" / "metadata.json").is_file()]
    if len(candidates) != 1:
        raise BundleError(f"expected exactly one bundle (a folder with configs/metadata.json), found {len(candidates)}.")
    return candidates[0]


def _bundle_key(source: Path, root: Path, top: Path, version: str) -> str:
    """The installed folder name: the source folder's name, the bundle folder inside the archive, or (a zip
    with the bundle at its root) the archive's name less ``.zip`` and ``_v<version>``."""
    if source.is_dir():
        return source.name
    if root != top:
        return root.name
    stem = source.name.removesuffix(".zip")
    return stem.removesuffix(f"_v{version}") or stem


def install_bundle(
    source: str | Path, dest: str | Path | None = None, trust: bool = False, force: bool = False, index_dir: str | Path | None = None,
    allow_builtin_name: bool = False, max_unpacked_bytes: int = MAX_UNPACKED_BYTES, max_member_bytes: int = MAX_MEMBER_BYTES,
    expected_sha256: str | None = None,
) -> BundleInfo:
    """Verify and install a packed bundle (``.zip``) or a bundle folder; return the installed bundle.

    Steps: check the archive's sha256 (``expected_sha256``), extract to a temporary folder next to ``dest`` (rejecting unsafe member names and archives
    that unpack to too much), verify every file against ``checksums.sha256`` (required in archives; used
    when a folder has one), verify the weights against the sha256s in the metadata and load each with
    ``weights_only=True`` (tensors only), inspect every config for code outside the
    allowlist (skipped with ``trust``), refuse the name of a built-in bundle (unless
    ``allow_builtin_name``), then move the bundle to ``dest/<name>``.

    Args:
        source: ``<name>_v<version>.zip`` or a bundle folder.
        dest: folder of installed bundles (default: :func:`user_bundle_dir`).
        trust: install even if configs call code outside the allowlisted libraries, or the weights' sha256s
            are not recorded in the metadata (a Model Zoo bundle); weights that do not match a recorded sha256
            are refused all the same.
        force: replace an installed bundle of the same name and version.
        index_dir: folder of the local zoo index (default: ``dest``).
        allow_builtin_name: install a bundle named like a built-in one anyway (the built-in keeps the
            name in every lookup; the installed copy runs by its folder).
        max_unpacked_bytes, max_member_bytes: limits on what an archive may unpack to.
        expected_sha256: the sha256 the archive must have (e.g. from a zoo index); checked before anything is extracted.

    Raises:
        BundleError: any check fails; nothing is installed then.
    """
    source = Path(source).resolve()
    if not source.exists():
        raise BundleError(f"{source}: no such archive or folder.")
    if expected_sha256 is not None:
        if source.is_dir():
            raise BundleError(f"{source}: --sha256 applies to an archive, not a folder.")
        if (found := sha256_file(source)) != expected_sha256.strip().lower():
            raise BundleError(f"{source}: sha256 {found} does not match the expected {expected_sha256.strip().lower()}; refusing to install it "
                              "(a corrupted or different archive).")
    dest_dir = Path(dest or user_bundle_dir())
    dest_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".install-"))
    try:
        if source.is_dir():
            shutil.copytree(source, staging / "src", symlinks=True, ignore=shutil.ignore_patterns(*EXCLUDED_TOP_DIRS, "__pycache__"))
            top = staging / "src"
            if any(p.is_symlink() for p in top.rglob("*")):
                raise BundleError(f"{source}: contains symbolic links; refusing it.")
        else:
            _extract(source, staging / "src", max_unpacked_bytes, max_member_bytes)
            top = staging / "src"
            if not (top / MANIFEST_NAME).is_file():
                raise BundleError(f"{source}: no {MANIFEST_NAME} at the archive root; not a MedGen bundle archive (pack it with `medgen bundle pack`).")
        if (top / MANIFEST_NAME).is_file():
            problems = _verify_manifest(top)
            if problems:
                raise BundleError(f"{source}: files do not match {MANIFEST_NAME}; refusing to install:\n  " + "\n  ".join(problems))
        root = _bundle_root(top)
        meta = read_metadata(root)
        version = _safe_name(str(meta.get("version", "")), "version")
        name = _safe_name(_bundle_key(source, root, top, version), "folder name")
        state, problems = weights_status(root, meta)
        if state == "MISMATCH" or (state != "OK" and not trust):
            hint = " (pass --trust to install a bundle whose weights' sha256s are recorded nowhere, only if you trust its source)" if state != "MISMATCH" else ""
            raise BundleError(f"{source}: weights cannot be verified against configs/metadata.json ({state}); refusing to install{hint}:\n  "
                              + "\n  ".join(problems))
        for path in weight_files(root):  # tensors only (weights_only=True): a pickle payload is refused here, never run
            if path.suffix in (".pt", ".pth", ".safetensors"):
                try:
                    load_state_dict_safely(path)
                except WeightsError as err:
                    raise BundleError(f"{source}: refusing to install: {err}") from None
        unsafe = check_bundle_configs(root)
        if unsafe and not trust:
            raise BundleError(
                f"{source}: configs run code outside the allowed libraries; refusing to install (use --trust only if you trust its author):\n  "
                + "\n  ".join(unsafe)
            )
        if name in builtin_bundle_names() and not allow_builtin_name:
            raise BundleError(f"{source}: bundle {name!r} has the name of a built-in bundle (a default model); refusing to install it. Rename it "
                              "(its folder), or pass --allow-builtin-name to install it anyway (the built-in keeps the name; yours runs by its folder).")
        target = dest_dir / name
        if target.exists():
            installed = read_metadata(target).get("version") if (target / "configs" / "metadata.json").is_file() else None
            if installed == version and not force:
                raise BundleError(f"bundle {name} {version} is already installed at {target}; use --force to replace it.")
            shutil.move(str(target), str(staging / "previous"))
        (root / MANIFEST_NAME).unlink(missing_ok=True)  # verified; its paths are relative to the archive root
        try:
            os.replace(root, target)
        except OSError:
            if (staging / "previous").exists():
                shutil.move(str(staging / "previous"), str(target))  # put the old install back
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    checksum = sha256_file(source) if source.is_file() else None
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    trusted = config_digest(target) if unsafe else None  # the configs the user trusted; any change brings the inspection back
    record_in_index(name, version, checksum, str(source), index_dir or dest_dir, installed_path=str(target), installed_at=now, needed_trust=bool(unsafe),
                    trusted_config_sha256=trusted, weights_verified=state == "OK", display_name=str(meta.get("name") or name))
    return BundleInfo(name=name, path=target, metadata=read_metadata(target), source="user")
