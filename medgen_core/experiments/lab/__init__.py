"""The latent-space lab: research tools around a class-conditional autoencoder on MNI152 slices.

* :mod:`.sweep`: bottleneck sweep (reconstruction PSNR/SSIM against latent size);
* :mod:`.interpolate`: latent interpolation between two slices, within and across classes;
* :mod:`.mix`: encoder of one model with the decoder of another, with a compatibility check;
* :mod:`.restore`: corruption (:mod:`medgen_core.transforms.corruption`) and restoration by level.

Library code: it knows nothing of bundles or the CLI (``medgen lab`` reads the bundle's ``lab.json``
and calls these functions).
"""

from medgen_core.data.lab_slices import LabSlices, heldout_axial_slices_2mm, lab_slices
from medgen_core.errors import LabError
from medgen_core.experiments.lab.interpolate import InterpolationResult, interpolate_latents, write_interpolation
from medgen_core.experiments.lab.mix import MixedAutoencoder, check_mixable, fit_latent_map, mix_models, run_mixing
from medgen_core.experiments.lab.restore import evaluate_restoration, run_restoration
from medgen_core.experiments.lab.sweep import evaluate_reconstruction, run_bottleneck_sweep

__all__ = [
    "InterpolationResult",
    "LabError",
    "LabSlices",
    "MixedAutoencoder",
    "check_mixable",
    "evaluate_reconstruction",
    "evaluate_restoration",
    "fit_latent_map",
    "heldout_axial_slices_2mm",
    "interpolate_latents",
    "lab_slices",
    "mix_models",
    "run_bottleneck_sweep",
    "run_mixing",
    "run_restoration",
    "write_interpolation",
]
