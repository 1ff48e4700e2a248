"""Exceptions that carry a message meant for the user (which file, what is wrong, what was expected)."""

from __future__ import annotations

__all__ = ["AugmentationError", "LabError", "MedGenError", "ImageReadError", "ImageTooLargeError", "ImageWriteError", "ProvenanceError", "BundleError", "SuperResolutionError", "TrainingDataError", "WeightsError"]


class MedGenError(Exception):
    """Base class: an error the user can act on. The CLI prints it as one line and exits with code 2."""


class ImageReadError(MedGenError, ValueError):
    """A file could not be read as a 3D image (missing, corrupt, unsupported, wrong shape, NaN/Inf, empty)."""


class ImageTooLargeError(ImageReadError):
    """A header declares more voxels than the reading limit allows (see :mod:`medgen_core.io.limits`)."""


class ImageWriteError(MedGenError, ValueError):
    """A volume could not be written (unsupported extension, would overwrite an input, ...)."""


class ProvenanceError(MedGenError, ValueError):
    """A provenance record is malformed or cannot be embedded."""


class BundleError(MedGenError, ValueError):
    """A bundle is missing, malformed, or refuses to run."""


class SuperResolutionError(MedGenError, ValueError):
    """An upscaling request that cannot be carried out on this volume (e.g. --axes through on an isotropic volume)."""


class WeightsError(BundleError):
    """A weight file is missing, does not match its recorded sha256, or carries a pickle payload."""


class AugmentationError(MedGenError, ValueError):
    """Generative augmentation: a missing or unloadable generator, a bad config, an unsupported request."""


class LabError(MedGenError, ValueError):
    """A latent-space lab request that cannot be carried out: models that do not fit together, bad settings, bad images."""


class TrainingDataError(MedGenError, ValueError):
    """Training data that cannot be used: a missing or empty folder, files of the wrong type, unmatched pairs."""
