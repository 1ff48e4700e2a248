"""MONAI bundles: discovery, safe weight loading, running, conformance checks and safe sharing.

Only this package and the CLI know about bundles; networks, training, transforms and I/O do not.

Security model (details in ``monai_bundles/SHARING.md``): user values (paths, names, ``--set`` values)
reach a config only as literals (:mod:`.overrides`); every bundle that is not built in is inspected
before anything parses its configs, on every route (:mod:`.inspection`, rules in :mod:`.config_safety`);
weights are sha256-checked, then loaded with ``weights_only=True`` (:mod:`.weights`); archives are
extracted with limits on the bytes read (:mod:`.sharing`). The inspection is a guard, not a sandbox.
"""

from medgen_core.bundles.catalog import BundleInfo, builtin_bundle_dir, discover_bundles, get_bundle, user_bundle_dir
from medgen_core.bundles.conformance import CheckResult, check_bundle, run_checks
from medgen_core.bundles.inspection import require_inspected
from medgen_core.bundles.overrides import literal, literal_overrides
from medgen_core.bundles.runner import run_bundle_inference
from medgen_core.bundles.sharing import install_bundle, pack_bundle
from medgen_core.bundles.zoo_index import read_zoo_index
from medgen_core.bundles.weights import load_state_dict_safely, load_verified_network, verify_weights_file, weights_status

__all__ = [
    "BundleInfo",
    "CheckResult",
    "builtin_bundle_dir",
    "check_bundle",
    "discover_bundles",
    "get_bundle",
    "install_bundle",
    "literal",
    "literal_overrides",
    "load_state_dict_safely",
    "load_verified_network",
    "pack_bundle",
    "read_zoo_index",
    "require_inspected",
    "run_bundle_inference",
    "run_checks",
    "user_bundle_dir",
    "verify_weights_file",
    "weights_status",
]
