"""MONAI bundles: discovery, safe weight loading, and running a bundle's own configs.

Only this package and the CLI know about bundles; networks, training, transforms and I/O do not.
"""

from medgen_core.bundles.catalog import BundleInfo, builtin_bundle_dir, discover_bundles, get_bundle, user_bundle_dir
from medgen_core.bundles.runner import run_bundle_inference
from medgen_core.bundles.weights import load_state_dict_safely, load_verified_network, verify_weights_file

__all__ = [
    "BundleInfo",
    "builtin_bundle_dir",
    "discover_bundles",
    "get_bundle",
    "load_state_dict_safely",
    "load_verified_network",
    "run_bundle_inference",
    "user_bundle_dir",
    "verify_weights_file",
]
