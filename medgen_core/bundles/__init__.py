"""MONAI bundles: discovery, safe weight loading, running, conformance checks and safe sharing.

Only this package and the CLI know about bundles; networks, training, transforms and I/O do not.
"""

from medgen_core.bundles.catalog import BundleInfo, builtin_bundle_dir, discover_bundles, get_bundle, user_bundle_dir
from medgen_core.bundles.conformance import CheckResult, check_bundle, run_checks
from medgen_core.bundles.runner import run_bundle_inference
from medgen_core.bundles.sharing import install_bundle, pack_bundle, read_zoo_index
from medgen_core.bundles.weights import load_state_dict_safely, load_verified_network, verify_weights_file, weights_status

__all__ = [
    "BundleInfo",
    "CheckResult",
    "builtin_bundle_dir",
    "check_bundle",
    "discover_bundles",
    "get_bundle",
    "install_bundle",
    "load_state_dict_safely",
    "load_verified_network",
    "pack_bundle",
    "read_zoo_index",
    "run_bundle_inference",
    "run_checks",
    "user_bundle_dir",
    "verify_weights_file",
    "weights_status",
]
