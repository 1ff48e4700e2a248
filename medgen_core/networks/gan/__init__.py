"""Image-translation GAN generators (Pix2Pix U-Net, CycleGAN ResNet) and the PatchGAN discriminator factory."""

from medgen_core.networks.gan.patchgan import build_patch_discriminator
from medgen_core.networks.gan.pix2pix_unet import Pix2PixUNet
from medgen_core.networks.gan.resnet_generator import ResnetGenerator
from medgen_core.networks.gan.searchable_unet import SearchablePix2PixUNet

__all__ = ["Pix2PixUNet", "ResnetGenerator", "SearchablePix2PixUNet", "build_patch_discriminator"]
