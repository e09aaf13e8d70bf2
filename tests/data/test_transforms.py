import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from vitcap.data.shapes import make_scene, render_scene
from vitcap.data.transforms import (
    ToChannels,
    build_eval_transform,
    build_train_transform,
    make_preprocessing,
)


def test_eval_transform_from_dict_resizes_and_normalises():
    pre = {
        "img_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }
    tf = build_eval_transform(pre)
    out = tf(Image.new("RGB", (80, 40), (255, 0, 0)))
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(32, 32)) and torch.allclose(out[1], -torch.ones(32, 32))
    # a PIL image and the same pixels as a uint8 tensor give the same result
    arr = render_scene(make_scene(0, 0, img_size=32))
    tensor_in = torch.from_numpy(arr).permute(2, 0, 1)
    assert torch.allclose(tf(Image.fromarray(arr)), tf(tensor_in), atol=1e-6)
    assert pickle.loads(pickle.dumps(tf))(tensor_in).shape == (3, 32, 32)


def test_crop_pct_centre_crops():
    img = Image.new("RGB", (40, 40), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 40, 4))  # white band at the top, cropped away by crop_pct=0.8
    pre = make_preprocessing(32, crop_pct=0.8, interpolation="nearest", mean=[0.0], std=[1.0])
    assert build_eval_transform(pre)(img).max() == 0.0
    assert build_eval_transform({**pre, "crop_pct": 1.0})(img).max() == 1.0


def test_preprocessing_validation_names_the_key():
    with pytest.raises(ValueError, match="'crop_pct'"):
        make_preprocessing(32, crop_pct=1.5)
    with pytest.raises(ValueError, match="'mean'"):
        make_preprocessing(32, mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="missing"):
        build_eval_transform({"img_size": 32})
    assert make_preprocessing(28, mean=[0.3], std=[0.2], in_chans=3)["mean"] == [0.3, 0.3, 0.3]


def test_caption_augmentation_keeps_colours_and_orientation():
    torch.manual_seed(0)
    pre = make_preprocessing(64, mean=[0.0], std=[1.0])
    tf = build_train_transform("caption", pre)
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:, :32] = (255, 0, 0)  # red left half, blue right half
    img[:, 32:] = (0, 0, 255)
    x = torch.from_numpy(img).permute(2, 0, 1)
    for _ in range(20):
        out = tf(x)
        assert out.shape == (3, 64, 64)
        assert out[0, :, :16].mean() > 0.95 and out[2, :, -16:].mean() > 0.95  # never flipped
        assert out[1].max() < 0.05  # no colour jitter
    with pytest.raises(ValueError, match="colours"):
        build_train_transform("caption", pre, randaugment=True)


def test_classification_augmentation_options():
    torch.manual_seed(0)
    pre = make_preprocessing(28, mean=[0.5], std=[0.5], in_chans=3)
    x = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8)
    for kwargs in ({}, {"randaugment": True}, {"auto_augment": "cifar10"}, {"crop": "rrc"}, {"crop": "none"}):
        out = build_train_transform("classify", pre, **kwargs)(x)
        assert out.shape == (3, 28, 28) and out.dtype == torch.float32
        assert torch.equal(out[0], out[1])  # grey replicated to 3 channels
    with pytest.raises(ValueError, match="auto_augment"):
        build_train_transform("classify", pre, auto_augment="bogus")


def test_pad_crop_pads_with_black_not_the_mean_colour():
    # MNIST-like images have black backgrounds: the padding must look like background, not a grey frame.
    pre = make_preprocessing(32, mean=[0.2860], std=[0.3530], in_chans=1)
    white = torch.full((1, 32, 32), 255, dtype=torch.uint8)
    transform = build_train_transform("classify", pre, crop="pad", hflip=False)
    black = (0 - 0.2860) / 0.3530
    torch.manual_seed(0)
    outs = [transform(white) for _ in range(20)]
    padded = [o for o in outs if (o < 0).any()]
    assert padded  # 20 random crops of a 4-px padding shift at least one
    for out in padded:
        assert torch.allclose(out[out < 0], torch.tensor(black), atol=1e-6)


def test_float_input_is_not_modified_in_place():
    pre = make_preprocessing(8, mean=[0.5], std=[0.5])
    x = torch.rand(3, 8, 8)
    before = x.clone()
    out = build_eval_transform(pre)(x)
    assert torch.equal(x, before) and torch.allclose(out, (x - 0.5) / 0.5)


def test_to_channels():
    grey = torch.zeros(1, 4, 4, dtype=torch.uint8)
    assert ToChannels(3)(grey).shape == (3, 4, 4)
    assert ToChannels(1)(torch.zeros(3, 4, 4, dtype=torch.uint8)).shape == (1, 4, 4)
