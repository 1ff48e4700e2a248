"""Super-resolution networks."""

from medgen_core.networks.sr.factory import DEFAULT_RRDB_SPEC, SR_ARCHITECTURES, sr_network
from medgen_core.networks.sr.fast import FastSRNet, PlainResidualBlock
from medgen_core.networks.sr.rrdb import RRDB, RRDBNet, ResidualDenseBlock

__all__ = ["DEFAULT_RRDB_SPEC", "FastSRNet", "PlainResidualBlock", "RRDB", "RRDBNet", "ResidualDenseBlock", "SR_ARCHITECTURES", "sr_network"]
