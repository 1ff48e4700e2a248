"""History buffer of generated images (Shrivastava et al. 2017), used by CycleGAN's discriminators."""

from __future__ import annotations

import torch

__all__ = ["ImagePool"]


class ImagePool:
    """Keeps up to ``pool_size`` past fakes; each query returns, per image, either the new image or (with
    probability 0.5 once the pool is full) a stored one, which the new image then replaces.

    ``pool_size=0`` disables the pool (the query returns its input). CycleGAN uses 50.
    """

    def __init__(self, pool_size: int = 50, generator: torch.Generator | None = None) -> None:
        if pool_size < 0:
            raise ValueError(f"ImagePool: pool_size must be >= 0, got {pool_size}.")
        self.pool_size = pool_size
        self.images: list[torch.Tensor] = []
        self.g = generator or torch.Generator().manual_seed(0)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``(B, C, *S)`` (detached) -> a batch of the same shape drawn as described above."""
        if self.pool_size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.g)) < 0.5:
                idx = int(torch.randint(self.pool_size, (), generator=self.g))
                out.append(self.images[idx].clone())
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)
