"""Networks. One family per sub-package; every network takes ``spatial_dims`` first."""

from medgen_core.networks.sr.fast import FastSRNet
from medgen_core.networks.sr.rrdb import RRDBNet

__all__ = ["FastSRNet", "RRDBNet"]
