import hashlib
import itertools
import json

import numpy as np
import pytest
from PIL import Image

from vitcap.data.captions import read_captions
from vitcap.data.shapes import (
    CLASS_NAMES,
    COLOR_CLASS_NAMES,
    COLORS,
    PLURALS,
    SHAPES,
    VOCABULARY,
    make_scene,
    render_scene,
    scene_label,
    shapes_main,
)
from vitcap.errors import ConfigError

SINGULAR = {v: k for k, v in PLURALS.items()}


def _digest(scenes) -> str:
    h = hashlib.sha256()
    for s in scenes:
        h.update(render_scene(s).tobytes())
        h.update("\n".join(s.captions).encode())
    return h.hexdigest()


def test_pinned_bytes_and_captions():
    # Computed once; a change here changes every published shapes number.
    assert _digest(make_scene(0, i) for i in range(4)) == (
        "08199e549385573246f2bb9abf503178fea8dfd667c916dc88a350440607fa0c"
    )
    assert _digest(make_scene(0, i, "val", img_size=48, min_objects=3, max_objects=4) for i in range(4)) == (
        "775ba0870cc5ba64e6f616447cba8fe853a99265f78013d1b65408986c95957c"
    )


def test_same_seed_same_data_different_seed_different():
    a = [render_scene(make_scene(1, i)) for i in range(5)]
    b = [render_scene(make_scene(1, i)) for i in range(5)]
    c = [render_scene(make_scene(2, i)) for i in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # an image does not depend on how many others were generated
    assert make_scene(1, 3) == [make_scene(1, i) for i in range(5)][3]


def test_splits_are_disjoint():
    digests = {
        split: {hashlib.sha256(render_scene(make_scene(0, i, split)).tobytes()).digest() for i in range(40)}
        for split in ("train", "val", "test")
    }
    for x, y in itertools.combinations(digests.values(), 2):
        assert not x & y
    assert all(len(d) == 40 for d in digests.values())


def test_image_format_and_object_counts():
    for max_objects in (1, 2, 4):
        for i in range(30):
            s = make_scene(3, i, img_size=64, max_objects=max_objects)
            img = render_scene(s)
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8
            assert 1 <= len(s.objects) <= max_objects and len(s.captions) == 5
            for a, b in itertools.combinations(s.objects, 2):  # bounding squares never overlap
                assert abs(a.cx - b.cx) >= a.radius + b.radius or abs(a.cy - b.cy) >= a.radius + b.radius
    assert render_scene(make_scene(0, 0, img_size=96)).shape == (96, 96, 3)
    with pytest.raises(ValueError, match="max_objects"):
        make_scene(0, 0, max_objects=5)


def test_pixels_show_the_objects():
    for i in range(20):
        s = make_scene(5, i, max_objects=1)
        (obj,) = s.objects
        centre = render_scene(s)[round(obj.cy - 0.5), round(obj.cx - 0.5)].astype(int)
        assert np.abs(centre - np.array(COLORS[obj.color])).max() <= 12, (obj, centre)


def test_captions_describe_the_scene():
    vocab = set(VOCABULARY)
    assert len(vocab) < 50
    for i in range(200):
        s = make_scene(0, i, max_objects=4)
        for c in s.captions:
            assert set(c.replace(",", " ,").split()) <= vocab, c
        assert len(set(s.captions)) >= 3
        if len(s.objects) == 1:
            (o,) = s.objects
            assert all(f"a {o.size} {o.color} {o.shape}" in c for c in s.captions)
    # relations follow the coordinates
    checked = 0
    for i in range(200):
        s = make_scene(0, i, max_objects=2)
        if len(s.objects) != 2 or (s.objects[0].size, s.objects[0].color, s.objects[0].shape) == (
            s.objects[1].size,
            s.objects[1].color,
            s.objects[1].shape,
        ):
            continue
        for c in s.captions:
            for rel, axis, sign in (
                ("left of", "cx", -1),
                ("right of", "cx", 1),
                ("above", "cy", -1),
                ("below", "cy", 1),
            ):
                if f" {rel} " in c:
                    before, after = c.split(f" {rel} ")
                    first = next(o for o in s.objects if f"{o.size} {o.color} {o.shape}" in before)
                    second = next(o for o in s.objects if f"{o.size} {o.color} {o.shape}" in after)
                    assert sign * (getattr(first, axis) - getattr(second, axis)) > 0, c
                    checked += 1
    assert checked > 200


def test_counts_are_grouped():
    found = False
    for i in range(300):
        s = make_scene(0, i, min_objects=2, max_objects=2)
        a, b = s.objects
        if (a.size, a.color, a.shape) == (b.size, b.color, b.shape):
            assert f"two {a.size} {a.color} {a.shape}" in s.captions[0]  # plural: "circles", "crosses"
            assert any(c.startswith("there are two") for c in s.captions)
            found = True
    assert found


def test_classification_labels():
    assert len(CLASS_NAMES) == 10 and list(CLASS_NAMES) == sorted(CLASS_NAMES)
    labels = set()
    for i in range(100):
        s = make_scene(0, i, min_objects=1, max_objects=1)
        (o,) = s.objects
        assert CLASS_NAMES[s.label] == f"{o.size}_{o.shape}"
        labels.add(s.label)
    assert labels == set(range(10))
    assert len(SHAPES) == 5 and len(COLORS) == 6


def test_color_labels_name_the_object_the_caption_names_first():
    assert len(COLOR_CLASS_NAMES) == 60 and list(COLOR_CLASS_NAMES) == sorted(COLOR_CLASS_NAMES)
    labels, two = set(), 0
    for i in range(300):
        s = make_scene(0, i, "train", 32, 1, 2)
        assert scene_label(s) == s.label  # the default scheme is the scene's own label
        # "there is a SIZE COLOUR SHAPE ..." / "there are two SIZE COLOUR SHAPES ...": the forward caption's first NP
        words = next(c for c in s.captions if c.startswith("there ")).split()
        size, color, shape = words[3], words[4], SINGULAR.get(words[5], words[5])
        name = COLOR_CLASS_NAMES[scene_label(s, "size_color_shape")]
        assert name == f"{size}_{color}_{shape}"
        o = s.objects[s.first]
        assert name == f"{o.size}_{o.color}_{o.shape}"
        labels.add(name)
        two += len(s.objects) == 2 and len({(x.size, x.color, x.shape) for x in s.objects}) == 2
    assert two > 100 and len(labels) > 50  # two-object scenes, where which object comes first matters
    with pytest.raises(ConfigError, match="label scheme"):
        scene_label(make_scene(0, 0), "colour")


def test_shapes_main_writes_loadable_trees(tmp_path):
    assert (
        shapes_main(["--out", str(tmp_path), "--num", "6", "--num-eval", "2", "--seed", "4", "--img-size", "32"]) == 0
    )
    pngs = sorted((tmp_path / "classify").rglob("*.png"))
    assert len(pngs) == 10
    for p in pngs:
        split, cls, name = p.relative_to(tmp_path / "classify").parts
        scene = make_scene(4, int(name[-10:-4]), split, 32, 1, 1)
        assert CLASS_NAMES[scene.label] == cls
        assert np.array_equal(np.asarray(Image.open(p)), render_scene(scene))
    cs = read_captions(tmp_path / "captions" / "captions.jsonl")
    assert len(cs) == 10 and cs.num_captions == 50
    assert sorted(cs.splits.values()).count("train") == 6
    for path, captions in cs.items():
        split, idx = cs.image_id(path)[:-4].split("_")
        scene = make_scene(4, int(idx), split, 32, 1, 2)
        assert captions == list(scene.captions)
        assert np.array_equal(np.asarray(Image.open(path)), render_scene(scene))
    first = json.loads((tmp_path / "captions" / "captions.jsonl").read_text().splitlines()[0])
    assert set(first) == {"image", "captions", "split"}


def test_shapes_main_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        shapes_main(["--out", str(tmp_path), "--img-size", "8"])
    assert "--img-size" in capsys.readouterr().err


def test_rendered_scenes_are_cached_without_changing_a_pixel() -> None:
    import torch

    from vitcap.data.datasets import RenderCache, ShapesCaptionSource
    from vitcap.data.transforms import build_eval_transform, make_preprocessing

    source = ShapesCaptionSource(0, "train", 6, 32)
    first = source.image(3)
    assert source.image(3) is first  # drawn once
    fresh = torch.from_numpy(render_scene(source.scenes[3])).permute(2, 0, 1)
    assert torch.equal(first, fresh)
    build_eval_transform(make_preprocessing(32))(first)
    assert torch.equal(first, fresh)  # the transform never writes into the cached image
    too_big = RenderCache(source.scenes, max_bytes=3 * 32 * 32)  # room for one scene, not six: no cache
    assert too_big[1] is not too_big[1] and torch.equal(too_big[1], source.image(1))
