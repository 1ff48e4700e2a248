"""Super-resolution networks."""

from medgen_core.networks.sr.rrdb import RRDB, RRDBNet, ResidualDenseBlock

__all__ = ["RRDB", "RRDBNet", "ResidualDenseBlock"]
