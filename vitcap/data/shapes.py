"""Built-in synthetic data: scenes of coloured shapes with captions and class labels, generated from a seed.

Every image is a function of ``(seed, split, index, img_size, min_objects, max_objects)`` only: its random
stream is ``random.Random("vitcap-shapes/v1/{seed}/{split}/{index}/{min_objects}-{max_objects}")`` (string
seeding and ``random()`` are stable across Python versions and platforms), pixel noise comes from NumPy's
``PCG64`` raw 64-bit outputs, and shapes are rasterised analytically in float64 with 4x4 supersampling (no
Pillow drawing code), so the same arguments give the same bytes on any machine, independent of how many
images are generated. Splits use different stream names, so ``train``/``val``/``test`` never share scenes.

Scenes: an ``img_size`` x ``img_size`` RGB image (default 64, at least 32) with a grey background (random
level, linear gradient, mild noise) and 1-4 non-overlapping objects. Each object has a

- shape: circle, square, triangle, star, cross (upright, fixed orientation);
- colour: red, green, blue, yellow, purple, orange;
- size: small (about 0.22 x img_size across) or large (about 0.38 x img_size).

Two-object scenes keep one axis clearly dominant (|dx| >= 1.5 |dy| or the reverse), so the spatial relation
is never ambiguous.

Caption grammar (every image gets all five templates once, in a random order)::

    NP      := "a" SIZE COLOUR SHAPE | COUNT SIZE COLOUR SHAPES        (identical objects are counted)
    COUNT   := "two" | "three" | "four"
    FWD     := NP_a REL NP_b    two different objects; NP_a is the left (or upper) one,
                                REL = "to the left of" when |dx| >= |dy| else "above"
             | LIST             otherwise: groups in canonical order (shape, colour, size),
                                LIST = "X" | "X and Y" | "X, Y and Z" | ...
    REV     := NP_b REL' NP_a   with REL' = "to the right of" / "below"; or LIST in reverse order
    caption := FWD | "there is" FWD | REV | "an image of" FWD | "the picture shows" REV
                                ("there are" when the first NP is plural)

Examples: "a small red circle"; "there is a large blue square to the left of a small green star";
"the picture shows two small yellow crosses"; "a large purple triangle below a small orange circle".
The content is fully determined by the scene; only the template order is random. ``VOCABULARY`` lists all 38
tokens the grammar can produce (37 words and the comma); with the default ``max_objects=2`` the captions use 34
of them ("three", "four", "and" and the comma need 3-4 objects).

Classification label: ``CLASS_NAMES`` (10 classes, sorted like an image-folder tree) are ``SIZE_SHAPE`` of the
object the forward caption (FWD) names first: the left (or upper) one of two different objects, else the first
group in canonical order. Classification scenes hold exactly one object (``min_objects = max_objects = 1``), so
there the label is that object's shape and size, not its colour or position; captioning scenes carry a label too
(the joint classification + captioning task trains on both). ``COLOR_CLASS_NAMES`` (60, ``SIZE_COLOUR_SHAPE``) name
its colour too: on two-object scenes, most of what a caption says (``scene_label``).

``write_shapes`` writes the same data to disk (``classify/{split}/{class}/{id}.png`` and
``captions/images/{id}.png`` + ``captions/captions.jsonl`` with a ``split`` per line) so the file loaders serve
it too; ``shapes_main`` is the ``vitcap data shapes`` command.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vitcap.errors import ConfigError

__all__ = [
    "CLASS_NAMES",
    "COLORS",
    "COLOR_CLASS_NAMES",
    "LABEL_SCHEMES",
    "SHAPES",
    "SIZES",
    "VOCABULARY",
    "Scene",
    "ShapeObject",
    "make_scene",
    "render_scene",
    "scene_image",
    "scene_label",
    "shapes_main",
    "write_shapes",
]

SHAPES = ("circle", "square", "triangle", "star", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars", "cross": "crosses"}
COLORS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (140, 55, 185),
    "orange": (245, 135, 25),
}
SIZES = ("small", "large")
COUNTS = {2: "two", 3: "three", 4: "four"}
CLASS_NAMES = tuple(sorted(f"{size}_{shape}" for shape in SHAPES for size in SIZES))
COLOR_CLASS_NAMES = tuple(sorted(f"{size}_{color}_{shape}" for shape in SHAPES for color in COLORS for size in SIZES))
LABEL_SCHEMES = {"size_shape": CLASS_NAMES, "size_color_shape": COLOR_CLASS_NAMES}  # class names per ``scene_label``
_FUNCTION_WORDS = ("a", "an", "and", "are", "is", "there", "image", "of", "the", "picture", "shows", "to", "left")
_FUNCTION_WORDS += ("right", "above", "below", ",")
VOCABULARY = tuple(
    sorted(set(_FUNCTION_WORDS) | set(SHAPES) | set(PLURALS.values()) | set(COLORS) | set(SIZES) | set(COUNTS.values()))
)

_SS = 4  # supersampling factor per axis
# Literal vertices (not computed with sin/cos, whose last bits may differ between math libraries).
_STAR = [
    (0.0, -1.0), (0.2645, -0.3641), (0.9511, -0.309), (0.428, 0.1391), (0.5878, 0.809),
    (0.0, 0.45), (-0.5878, 0.809), (-0.428, 0.1391), (-0.9511, -0.309), (-0.2645, -0.3641),
]  # fmt: skip
_TRIANGLE = [(0.0, -1.0), (1.0, 0.85), (-1.0, 0.85)]


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; coordinates in pixels of the ``img_size`` image.

    Attributes:
        shape: One of ``SHAPES``.
        color: One of ``COLORS``.
        size: ``"small"`` or ``"large"``.
        cx: Centre x (column).
        cy: Centre y (row).
        radius: Half the object's extent.
        rgb: Exact fill colour (the named colour with a small jitter).
    """

    shape: str
    color: str
    size: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A generated scene: layout, background, captions and class label (pixels come from ``render_scene``).

    Attributes:
        objects: The objects in drawing order.
        captions: Five captions, one per template.
        first: Index into ``objects`` of the object the forward caption names first.
        img_size: Image side in pixels.
        background: (grey level, gradient x, gradient y, tint r, g, b).
        noise_seed: Seed of the pixel-noise stream.
    """

    objects: tuple[ShapeObject, ...]
    captions: tuple[str, ...]
    first: int
    img_size: int
    background: tuple[float, float, float, int, int, int]
    noise_seed: int

    label = property(lambda self: scene_label(self), doc="``CLASS_NAMES`` index of ``objects[first]``.")


def scene_label(scene: Scene, scheme: str = "size_shape") -> int:
    """Class of the first-named object: size and shape (``CLASS_NAMES``, = ``scene.label``) or with colour."""
    if scheme not in LABEL_SCHEMES:
        raise ConfigError(f"shapes label scheme must be one of {sorted(LABEL_SCHEMES)}, got {scheme!r}")
    o = scene.objects[scene.first]
    name = f"{o.size}_{o.shape}" if scheme == "size_shape" else f"{o.size}_{o.color}_{o.shape}"
    return LABEL_SCHEMES[scheme].index(name)


def make_scene(
    seed: int,
    index: int,
    split: str = "train",
    img_size: int = 64,
    min_objects: int = 1,
    max_objects: int = 2,
) -> Scene:
    """Generate the layout and captions of one scene (cheap; no pixels).

    Args:
        seed: Data-set seed.
        index: Image index within the split.
        split: ``"train"``, ``"val"`` or ``"test"`` (any string names an independent stream).
        img_size: Image side in pixels (>= 32).
        min_objects: Fewest objects (>= 1).
        max_objects: Most objects (<= 4).
    """
    if img_size < 32:
        raise ConfigError(f"shapes img_size must be >= 32, got {img_size}")
    if not 1 <= min_objects <= max_objects <= 4:
        raise ConfigError(f"need 1 <= min_objects <= max_objects <= 4, got {min_objects}, {max_objects}")
    rng = random.Random(f"vitcap-shapes/v1/{seed}/{split}/{index}/{min_objects}-{max_objects}")
    n = min_objects + _below(rng, max_objects - min_objects + 1)
    objects = _layout(rng, n, img_size)
    level = 95.0 + 70.0 * rng.random()
    grad = (30.0 * rng.random() - 15.0, 30.0 * rng.random() - 15.0)
    tint = tuple(_below(rng, 11) - 5 for _ in range(3))
    noise_seed = int(rng.random() * 2**52)
    captions, first = _captions(objects, rng)
    return Scene(objects, captions, objects.index(first), img_size, (level, *grad, *tint), noise_seed)


def render_scene(scene: Scene) -> np.ndarray:
    """Rasterise a scene.

    Returns:
        uint8 array (H, W, 3) with H = W = ``scene.img_size``.
    """
    S = scene.img_size
    level, gx, gy, tr, tg, tb = scene.background
    coords = (np.arange(S, dtype=np.float64) + 0.5) / S - 0.5
    base = level + gx * coords[None, :] + gy * coords[:, None]  # (S, S)
    img = np.stack([base + tr, base + tg, base + tb], axis=-1)  # (S, S, 3)
    for obj in scene.objects:
        x0, x1 = max(0, int(obj.cx - obj.radius) - 1), min(S, int(obj.cx + obj.radius) + 2)
        y0, y1 = max(0, int(obj.cy - obj.radius) - 1), min(S, int(obj.cy + obj.radius) + 2)
        cov = _coverage(obj, x0, x1, y0, y1)  # (h, w) in [0, 1]
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1.0 - cov[..., None]) + np.asarray(obj.rgb, dtype=np.float64) * cov[..., None]
    raw = np.random.PCG64(scene.noise_seed).random_raw(S * S * 3)
    noise = (raw % np.uint64(7)).astype(np.int64).reshape(S, S, 3) - 3  # mild noise in [-3, 3]
    return np.clip(np.rint(img) + noise, 0, 255).astype(np.uint8)


def scene_image(scene: Scene) -> Image.Image:
    """``render_scene`` as a PIL RGB image."""
    return Image.fromarray(render_scene(scene), mode="RGB")


# -- layout ------------------------------------------------------------------------------------------------


def _below(rng: random.Random, n: int) -> int:
    """Uniform integer in [0, n) from ``random()`` only (the one method with a cross-version guarantee)."""
    return min(int(rng.random() * n), n - 1)


def _layout(rng: random.Random, n: int, S: int) -> tuple[ShapeObject, ...]:
    margin, gap = max(1, round(0.04 * S)), max(2, round(0.04 * S))
    for _attempt in range(100):
        objects: list[ShapeObject] = []
        for k in range(n):
            size = SIZES[_below(rng, 2)]
            shape, color = SHAPES[_below(rng, len(SHAPES))], list(COLORS)[_below(rng, len(COLORS))]
            base = 0.11 * S if size == "small" else 0.19 * S
            radius = round(base + (rng.random() - 0.5) * 0.03 * S, 2)
            rgb = tuple(int(min(255, max(0, c + _below(rng, 17) - 8))) for c in COLORS[color])
            placed = None
            for _try in range(200):
                lo, hi = radius + margin, S - radius - margin
                cx, cy = round(lo + (hi - lo) * rng.random(), 2), round(lo + (hi - lo) * rng.random(), 2)
                if all(_apart(cx, cy, radius, o, gap) for o in objects) and (
                    n != 2 or k == 0 or _clear_relation(objects[0], cx, cy)
                ):
                    placed = ShapeObject(shape, color, size, cx, cy, radius, rgb)
                    break
            if placed is None:
                break
            objects.append(placed)
        if len(objects) == n:
            return tuple(objects)
    raise RuntimeError(f"could not place {n} shapes in a {S}x{S} image")


def _apart(cx: float, cy: float, r: float, other: ShapeObject, gap: float) -> bool:
    return abs(cx - other.cx) >= r + other.radius + gap or abs(cy - other.cy) >= r + other.radius + gap


def _clear_relation(first: ShapeObject, cx: float, cy: float) -> bool:
    dx, dy = abs(cx - first.cx), abs(cy - first.cy)
    return dx >= 1.5 * dy or dy >= 1.5 * dx


# -- captions ----------------------------------------------------------------------------------------------


def _noun_phrase(count: int, size: str, color: str, shape: str) -> str:
    if count == 1:
        return f"a {size} {color} {shape}"
    return f"{COUNTS[count]} {size} {color} {PLURALS[shape]}"


def _join_list(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _captions(objects: Sequence[ShapeObject], rng: random.Random) -> tuple[tuple[str, ...], ShapeObject]:
    """The five captions of a scene and the object their forward form names first (the scene's label)."""
    groups: dict[tuple[str, str, str], list[ShapeObject]] = {}
    for o in objects:
        groups.setdefault((o.size, o.color, o.shape), []).append(o)
    if len(objects) == 2 and len(groups) == 2:
        a, b = objects
        if abs(b.cx - a.cx) >= abs(b.cy - a.cy):
            (a, b), rel, rev_rel = sorted((a, b), key=lambda o: o.cx), "to the left of", "to the right of"
        else:
            (a, b), rel, rev_rel = sorted((a, b), key=lambda o: o.cy), "above", "below"
        np_a, np_b = _noun_phrase(1, a.size, a.color, a.shape), _noun_phrase(1, b.size, b.color, b.shape)
        fwd, rev = f"{np_a} {rel} {np_b}", f"{np_b} {rev_rel} {np_a}"
        first_plural, first = False, a
    else:
        order = sorted(groups, key=lambda g: (SHAPES.index(g[2]), list(COLORS).index(g[1]), SIZES.index(g[0])))
        phrases = [_noun_phrase(len(groups[g]), *g) for g in order]
        fwd, rev = _join_list(phrases), _join_list(phrases[::-1])
        first_plural, first = len(groups[order[0]]) > 1, groups[order[0]][0]
    captions = [
        fwd,
        f"there {'are' if first_plural else 'is'} {fwd}",
        rev,
        f"an image of {fwd}",
        f"the picture shows {rev}",
    ]
    for i in range(len(captions) - 1, 0, -1):  # Fisher-Yates with random() only
        j = _below(rng, i + 1)
        captions[i], captions[j] = captions[j], captions[i]
    return tuple(captions), first


# -- rasterisation -----------------------------------------------------------------------------------------


def _coverage(obj: ShapeObject, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Fraction of each pixel in [y0:y1, x0:x1] covered by the object (4x4 supersampling)."""
    offsets = (np.arange(_SS, dtype=np.float64) + 0.5) / _SS
    xs = (np.arange(x0, x1, dtype=np.float64)[:, None] + offsets[None, :]).reshape(-1)  # (w * SS,)
    ys = (np.arange(y0, y1, dtype=np.float64)[:, None] + offsets[None, :]).reshape(-1)  # (h * SS,)
    u = (xs[None, :] - obj.cx) / obj.radius  # (1, w * SS)
    v = (ys[:, None] - obj.cy) / obj.radius  # (h * SS, 1)
    u, v = np.broadcast_arrays(u, v)  # (h * SS, w * SS)
    if obj.shape == "circle":
        inside = u * u + v * v <= 1.0
    elif obj.shape == "square":
        inside = (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    elif obj.shape == "cross":
        inside = ((np.abs(u) <= 0.32) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.32) & (np.abs(u) <= 0.95))
    elif obj.shape == "triangle":
        inside = _in_polygon(u, v, _TRIANGLE)
    elif obj.shape == "star":
        inside = _in_polygon(u, v, _STAR)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    h, w = y1 - y0, x1 - x0
    return inside.reshape(h, _SS, w, _SS).mean(axis=(1, 3))  # (h, w)


def _in_polygon(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over sample points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        (xa, ya), (xb, yb) = vertices[i], vertices[(i + 1) % n]
        if ya == yb:
            continue
        crosses = (ya > v) != (yb > v)
        x_at = xa + (xb - xa) * (v - ya) / (yb - ya)
        inside ^= crosses & (u < x_at)
    return inside


# -- files -------------------------------------------------------------------------------------------------


def write_shapes(
    out_dir: str | Path,
    num: int = 1000,
    seed: int = 0,
    img_size: int = 64,
    splits: dict[str, int] | None = None,
    max_objects: int = 2,
    tasks: Sequence[str] = ("classify", "caption"),
) -> dict[str, int]:
    """Write the synthetic data to disk for the file loaders.

    Layout: ``out_dir/classify/{split}/{class}/{split}_{i:06d}.png`` (one object per image) and
    ``out_dir/captions/images/{split}_{i:06d}.png`` with ``out_dir/captions/captions.jsonl`` (one line per image:
    ``image``, ``captions``, ``split``). Images are those of the in-memory data with the same arguments.

    Args:
        out_dir: Output directory (created).
        num: Training images per task; val and test get ``max(1, num // 10)`` each unless ``splits`` is given.
        seed: Data-set seed.
        img_size: Image side in pixels.
        splits: Images per split, e.g. ``{"train": 500, "val": 50, "test": 50}``.
        max_objects: Most objects per captioning scene (1-4).
        tasks: Which trees to write: ``"classify"``, ``"caption"``.

    Returns:
        Number of files written per task.
    """
    out_dir = Path(out_dir)
    counts = splits if splits is not None else {"train": num, "val": max(1, num // 10), "test": max(1, num // 10)}
    written = {}
    if "classify" in tasks:
        n = 0
        for split, count in counts.items():
            for name in CLASS_NAMES:  # every class directory exists, so folder loaders always see 10 classes
                (out_dir / "classify" / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                scene = make_scene(seed, i, split, img_size, 1, 1)
                scene_image(scene).save(
                    out_dir / "classify" / split / CLASS_NAMES[scene.label] / f"{split}_{i:06d}.png"
                )
                n += 1
        written["classify"] = n
    if "caption" in tasks:
        images = out_dir / "captions" / "images"
        images.mkdir(parents=True, exist_ok=True)
        n = 0
        with open(out_dir / "captions" / "captions.jsonl", "w", encoding="utf-8") as f:
            for split, count in counts.items():
                for i in range(count):
                    scene = make_scene(seed, i, split, img_size, 1, max_objects)
                    name = f"{split}_{i:06d}.png"
                    scene_image(scene).save(images / name)
                    f.write(json.dumps({"image": name, "captions": list(scene.captions), "split": split}) + "\n")
                    n += 1
        written["caption"] = n
    return written


def shapes_main(argv: list[str] | None = None) -> int:
    """``vitcap data shapes``: write the synthetic data set to a directory (see ``write_shapes``)."""
    parser = argparse.ArgumentParser(prog="vitcap data shapes", description=write_shapes.__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--num", type=int, default=1000, help="training images per task (default 1000)")
    parser.add_argument("--num-eval", type=int, default=None, help="val and test images each (default num // 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--img-size", type=int, default=64, help="image side in pixels (>= 32)")
    parser.add_argument("--max-objects", type=int, default=2, help="most objects per captioning scene (1-4)")
    parser.add_argument("--tasks", nargs="+", choices=("classify", "caption"), default=["classify", "caption"])
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f"--num must be >= 1, got {args.num}")
    if args.img_size < 32:
        parser.error(f"--img-size must be >= 32, got {args.img_size}")
    if not 1 <= args.max_objects <= 4:
        parser.error(f"--max-objects must be in 1..4, got {args.max_objects}")
    num_eval = max(1, args.num // 10) if args.num_eval is None else args.num_eval
    written = write_shapes(
        args.out,
        seed=args.seed,
        img_size=args.img_size,
        splits={"train": args.num, "val": num_eval, "test": num_eval},
        max_objects=args.max_objects,
        tasks=args.tasks,
    )
    for task, n in written.items():
        where = args.out / ("classify" if task == "classify" else "captions")
        print(f"wrote {n} {task} images to {where}")
    return 0
