"""Classification data readers: image-folder trees, raw MNIST-style IDX files, torchvision MNIST/FashionMNIST/CIFAR10.

Image folders: ``root/<class>/<image>`` (one tree, validation split held out by hash), or
``root/{train,val,test}/<class>/<image>`` (``val``/``test`` optional). Class names are the sorted class
directory names of the training tree (``write_shapes`` writes this layout). Files with an image extension are
listed; other files are ignored.

IDX files (the MNIST/Fashion-MNIST format, gzipped or not): ``train-images-idx3-ubyte[.gz]`` +
``train-labels-idx1-ubyte[.gz]``, and for the test split ``t10k-images-idx3-ubyte[.gz]`` +
``t10k-labels-idx1-ubyte[.gz]``, found in the given directory or in torchvision's ``<root>/<Name>/raw/``. They
are read with numpy/gzip into one uint8 tensor; nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from vitcap.data.captions import Problem, hash_split
from vitcap.data.images import IMAGE_EXTENSIONS
from vitcap.errors import ConfigError, DataError

__all__ = [
    "CIFAR10_CLASSES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "find_idx_pair",
    "load_cifar10",
    "load_idx_pair",
    "load_mnist_like",
    "read_idx",
    "scan_image_folder",
    "split_indices",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
MNIST_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzipped) into an array of its stored dtype and shape.

    Raises:
        DataError: Not an IDX file, truncated, or a corrupt gzip stream; the message names the file.
    """
    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})", path=path) from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})", path=path)
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header", path=path)
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{path}: IDX shape {shape} needs {expected} bytes, file has {len(data)} (truncated?)", path=path
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_pair(root: str | os.PathLike, prefix: str = "train") -> tuple[Path, Path] | None:
    """Locate ``{prefix}-images-idx3-ubyte[.gz]`` and ``{prefix}-labels-idx1-ubyte[.gz]`` under ``root``.

    Looks in ``root`` itself and in torchvision's ``root/*/raw``; returns None when either file is missing.
    """
    root = Path(root)
    dirs = [root, *sorted(p for p in root.glob("*/raw") if p.is_dir())] if root.is_dir() else []
    for d in dirs:
        found = []
        for kind, nd in (("images", 3), ("labels", 1)):
            names = [
                f"{prefix}-{kind}-idx{nd}-ubyte.gz",
                f"{prefix}-{kind}-idx{nd}-ubyte",
                f"{prefix}-{kind}.idx{nd}-ubyte",
            ]
            found.append(next((d / n for n in names if (d / n).is_file()), None))
        if all(found):
            return found[0], found[1]
    return None


def load_idx_pair(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, H, W) and labels long (N,) from an IDX pair.

    Raises:
        DataError: Wrong dtype/rank, or image and label counts differ; names the files.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}", path=images_path
        )
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected labels (N,), got shape {labels.shape}", path=labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels", path=images_path
        )
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_mnist_like(
    name: str, root: str | os.PathLike, train: bool, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST or Fashion-MNIST as uint8 (N, 28, 28) + labels, from IDX files under ``root``.

    Args:
        name: ``"mnist"`` or ``"fashion_mnist"``.
        root: Directory holding the IDX files directly or in torchvision's layout.
        train: Training (``train-*``) or test (``t10k-*``) files.
        download: Fetch with torchvision when the files are missing.

    Returns:
        The tensors, or None when the files are missing and ``download`` is False.
    """
    pair = find_idx_pair(root, "train" if train else "t10k")
    if pair is None and download:
        import torchvision.datasets as tvd

        cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
        ds = cls(str(root), train=train, download=True)
        return ds.data.to(torch.uint8), ds.targets.long()
    return None if pair is None else load_idx_pair(*pair)


def load_cifar10(root: str | os.PathLike, train: bool, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 as uint8 (N, 3, 32, 32) + labels via torchvision (downloads only when ``download``).

    Raises:
        FileNotFoundError: The data is not under ``root`` and ``download`` is False.
    """
    import torchvision.datasets as tvd

    try:
        ds = tvd.CIFAR10(str(root), train=train, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root} (expected {Path(root) / 'cifar-10-batches-py'}); "
            "pass download=True to fetch it"
        ) from e
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return images, torch.tensor(ds.targets, dtype=torch.long)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, val) index arrays, each sorted; ``round(n * val_fraction)`` validation items."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = np.random.Generator(np.random.PCG64(seed)).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def scan_image_folder(
    root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0
) -> tuple[dict[str, list[tuple[Path, int, str]]], list[str], list[Problem]]:
    """List an image-folder tree (see the module docstring) as splits of (path, label, id).

    Args:
        root: The tree.
        val_fraction: Without a ``val/`` tree: fraction of the training images held out as ``val`` (by hash of
            the relative path and ``seed``).
        seed: Mixed into the hash split.

    Returns:
        ``({"train": [...], "val": [...], "test": [...]}, class_names, problems)``; problems are empty files,
        files outside ``root`` (symlinks), classes in val/test that are not in train.

    Raises:
        FileNotFoundError: ``root`` is not a directory or has no class directories.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    real_root = root.resolve()
    split_layout = (root / "train").is_dir()
    trees = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} if split_layout else {"all": root}
    train_tree = trees["train"] if split_layout else root
    class_names = sorted(p.name for p in train_tree.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_names:
        raise FileNotFoundError(f"{train_tree}: no class directories (expected {train_tree}/<class>/<image>)")
    index = {c: i for i, c in enumerate(class_names)}
    problems: list[Problem] = []
    out: dict[str, list[tuple[Path, int, str]]] = {"train": [], "val": [], "test": []}
    for split, tree in trees.items():
        for class_dir in sorted(p for p in tree.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir.name not in index:
                problems.append(Problem(str(class_dir), f"class {class_dir.name!r} is not in {train_tree}"))
                continue
            files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            for f in files:
                rel = f.relative_to(root).as_posix()
                if not f.resolve().is_relative_to(real_root):
                    problems.append(Problem(rel, f"path escapes the image root {real_root}"))
                    continue
                if f.stat().st_size == 0:
                    problems.append(Problem(rel, "image file is empty (0 bytes)"))
                    continue
                target = "train" if split == "all" else split
                if split == "all" or (split == "train" and "val" not in trees):
                    target = "val" if hash_split(f"{seed}/{rel}", val_fraction, 0.0) == "val" else "train"
                out[target].append((f, index[class_dir.name], rel))
    if not out["train"]:
        raise FileNotFoundError(f"{train_tree}: no training images found ({', '.join(IMAGE_EXTENSIONS)})")
    return out, class_names, problems
