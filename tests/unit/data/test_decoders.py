"""data.decoder: torchvision's decoding gives PIL's pixels, and the ImageNet transforms on its
uint8 tensors draw the same augmentations as on PIL images (up to interpolation rounding)."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

from lt_bench.data.decoders import UNREADABLE_IMAGE, decode_rgb_tensor, image_decoder, load_rgb
from lt_bench.data.split_file import SplitEntry, SplitFileDataset
from lt_bench.data.synthetic import imagenet_like_size, natural_like_image
from lt_bench.data.transforms import IMAGENET_STD, build_transform
from lt_bench.errors import DataError

FORMATS = {"rgb.jpg": ("RGB", {"quality": 90}), "gray.jpg": ("L", {"quality": 90}),
           "cmyk.jpg": ("CMYK", {"quality": 90}), "rgb.png": ("RGB", {}), "rgba.png": ("RGBA", {}),
           "rgb.webp": ("RGB", {}), "rgb.bmp": ("RGB", {}), "p.gif": ("P", {})}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("decoders")
    rng = np.random.default_rng(0)
    pixels = natural_like_image(203, 151, rng)            # odd sizes: no block-aligned shortcut
    for name, (mode, options) in FORMATS.items():
        Image.fromarray(pixels).convert(mode).save(folder / name, **options)
    return folder


@pytest.mark.parametrize("name", list(FORMATS))
def test_torchvision_decodes_the_pixels_pil_decodes(images, name):
    expected = pil_to_tensor(load_rgb(images / name))
    got = decode_rgb_tensor(images / name)
    assert got.dtype == torch.uint8 and got.shape == expected.shape == (3, 151, 203)
    assert torch.equal(got, expected)


def test_the_same_seed_draws_the_same_augmentation_on_either_decoder(images):
    """RandomResizedCrop, flip and AutoAugment draw their parameters from torch's RNG whatever
    the input type, so with one seed both paths crop, flip and augment alike; what differs is
    the kernels' rounding (antialiased bilinear resize, AutoAugment's blends in uint8)."""
    train = build_transform("imagenet", True, autoaugment=True, image_size=64, resize=73)
    one_level = 1 / 255 / min(IMAGENET_STD)                 # one grey level after normalising
    means = []
    for seed in range(30):
        torch.manual_seed(seed)
        a = train(load_rgb(images / "rgb.jpg"))
        torch.manual_seed(seed)
        b = train(decode_rgb_tensor(images / "rgb.jpg"))
        assert a.shape == b.shape == (3, 64, 64) and a.dtype == b.dtype == torch.float32
        means.append((a - b).abs().mean().item())
    assert np.median(means) < 0.25 * one_level             # typically well under a grey level
    assert max(means) < 2 * one_level
    # and different seeds differ by far more: the comparison above is not vacuous
    torch.manual_seed(0)
    a = train(load_rgb(images / "rgb.jpg"))
    torch.manual_seed(1)
    b = train(decode_rgb_tensor(images / "rgb.jpg"))
    assert (a - b).abs().mean().item() > 20 * one_level


def test_evaluation_transform_agrees_within_a_grey_level(images):
    test = build_transform("imagenet", False, image_size=64, resize=73)
    a, b = test(load_rgb(images / "rgb.jpg")), test(decode_rgb_tensor(images / "rgb.jpg"))
    assert (a - b).abs().max().item() <= 1.01 / 255 / min(IMAGENET_STD)


@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
@pytest.mark.parametrize("content", [b"", b"not an image", "truncated"])
def test_unreadable_files_are_named_errors_with_either_decoder(images, tmp_path, decoder, content):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes((images / "rgb.jpg").read_bytes()[:400] if content == "truncated" else content)
    with pytest.raises(UNREADABLE_IMAGE):
        image_decoder(decoder)(bad)
    split = tmp_path / "train.txt"
    dataset = SplitFileDataset(tmp_path, split, [SplitEntry("bad.jpg", 0, 7)], decoder=decoder)
    with pytest.raises(DataError, match=r"train.txt:7: cannot read image .*bad.jpg"):
        dataset[0]


def test_missing_file_is_named(tmp_path):
    dataset = SplitFileDataset(tmp_path, tmp_path / "s.txt", [SplitEntry("gone.jpg", 0, 1)], decoder="torchvision")
    with pytest.raises(DataError, match="gone.jpg"):
        dataset[0]


def test_imagenet_like_sizes_follow_imagenets_mix():
    rng = np.random.default_rng(0)
    sizes = [imagenet_like_size(rng) for _ in range(2000)]
    long_sides = np.array([max(s) for s in sizes])
    assert 0.6 < np.mean(long_sides == 500) < 0.8          # most ImageNet images are 500 px long
    assert long_sides.min() >= 120 and long_sides.max() <= 1200
    pixels = np.mean([w * h for w, h in sizes])
    assert 150_000 < pixels < 210_000                        # ImageNet's mean is about 469 x 387
