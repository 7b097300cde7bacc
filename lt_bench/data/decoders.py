"""Image decoders of split-file datasets (``data.decoder``): a file's bytes to an RGB image the
task's torchvision transforms take.  Both give the same pixels for JPEGs (libjpeg-turbo with
the same settings, checked by the tests); the transforms then run on what the decoder returns.

- ``pil``: a PIL image; the transforms run PIL's kernels (the field's usual path: the
  classifier-balancing and GOL authors' data loaders).
- ``torchvision``: ``torchvision.io.decode_image`` to a uint8 CHW tensor; the same v2
  transforms run their tensor kernels (antialiased resize, AutoAugment on uint8).  Files
  torchvision cannot decode are read by PIL instead, so nothing PIL reads is refused.
  torchvision 0.29 deprecates its decoders in favour of TorchCodec's; they stay in the
  torchvision releases lt_bench supports (<= 0.29), and this is the one place to move.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from lt_bench.registries import IMAGE_DECODERS

warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

# what PIL raises for a missing, truncated or malformed image file (a decompression bomb too)
UNREADABLE_IMAGE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@IMAGE_DECODERS.register("pil")
def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")   # decodes the whole image: truncation shows here


@IMAGE_DECODERS.register("torchvision")
def decode_rgb_tensor(path: Path) -> Any:
    """A uint8 [3, H, W] tensor; PIL's decoding of the file where torchvision's fails."""
    import torch
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms.v2.functional import pil_to_tensor
    with open(path, "rb") as f:                 # OSError for a missing file, as with PIL
        data = bytearray(f.read())
    try:
        return decode_image(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):          # an empty file, a format or variant torchvision lacks
        return pil_to_tensor(load_rgb(path))    # PIL's error when it cannot read it either


def image_decoder(name: str) -> Callable[[Path], Any]:
    return IMAGE_DECODERS.get(name).cls
