"""RandomContrastAugment: background untouched, inversion really inverts, seeded determinism."""

import torch

from medgen_core.transforms.intensity_augment import RandomContrastAugment


def _phantom() -> torch.Tensor:
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 8:24] = 0.3  # "grey matter"
    x[..., 12:20, 12:20] = 0.9  # "white matter"
    return x


def test_background_stays_zero_and_inversion_swaps_contrast() -> None:
    aug = RandomContrastAugment(invert_prob=1.0, gamma_range=(1.0, 1.0), gain_range=(1.0, 1.0), noise_prob=0.0)
    y = aug(_phantom())
    assert torch.all(y[..., :8, :] == 0)  # background
    assert y[0, 0, 16, 16] < y[0, 0, 9, 9]  # bright centre became darker than the rim


def test_identity_settings_leave_image_unchanged() -> None:
    aug = RandomContrastAugment(invert_prob=0.0, gamma_range=(1.0, 1.0), gain_range=(1.0, 1.0), noise_prob=0.0)
    assert torch.allclose(aug(_phantom()), _phantom(), atol=1e-6)


def test_seeded_generator_is_deterministic_and_noise_reaches_the_target() -> None:
    x = _phantom().repeat(4, 1, 1, 1)
    a = RandomContrastAugment(noise_prob=1.0, noise_range=(0.02, 0.02), generator=torch.Generator().manual_seed(3))(x)
    b = RandomContrastAugment(noise_prob=1.0, noise_range=(0.02, 0.02), generator=torch.Generator().manual_seed(3))(x)
    assert torch.equal(a, b)
    assert 0.01 < float(a[..., :8, :].std()) < 0.03  # noise everywhere, with the requested strength
