"""Which library reads WebDataset tar shards for vitcap: `webdataset`, LitData, or torchdata's stateful loader.

Writes `--images` shapes scenes as JPEG tar shards in img2dataset's layout (`KEY.jpg`, `KEY.txt`, `KEY.json`),
then for each candidate that is installed times one pass over all samples (best of `--repeats`), raw bytes only
and with every JPEG decoded, in one process without workers. LitData cannot read the tars: it needs its own chunk
format, so its figure includes the `optimize` conversion it needs first. Prints one JSON line.

    python bench/shard_readers.py --images 2000 --per-shard 100

The candidates are not vitcap dependencies; install them to compare (`pip install webdataset litdata torchdata`).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, load_avg  # noqa: E402


def write_shards(out: Path, images: int, per_shard: int, size: int) -> list[str]:
    from vitcap.data.shapes import make_scene, scene_image

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, images, per_shard):
        with tarfile.open(out / f"{start // per_shard:05d}.tar", "w") as tar:
            for i in range(start, min(images, start + per_shard)):
                scene = make_scene(0, i, "train", size, 1, 2)
                buffer = io.BytesIO()
                scene_image(scene).save(buffer, format="JPEG", quality=90)
                key = f"{i:09d}"
                add(tar, f"{key}.jpg", buffer.getvalue())
                add(tar, f"{key}.txt", scene.captions[0].encode())
                add(tar, f"{key}.json", json.dumps({"key": key, "caption": scene.captions[0]}).encode())
    return sorted(str(p) for p in out.glob("*.tar"))


def _decode(data: bytes) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGB").load()


def webdataset_pass(urls: list[str]) -> Iterator[bytes]:
    import webdataset as wds

    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        yield sample["jpg"]


def torchdata_pass(urls: list[str]) -> Iterator[bytes]:
    """torchdata has no tar reader since 0.10: the standard library's tarfile under its StatefulDataLoader."""
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    class Tars(torch.utils.data.IterableDataset):
        def __iter__(self) -> Iterator[dict]:
            for url in urls:
                with tarfile.open(url, "r|") as tar:
                    current: dict = {}
                    for member in tar:
                        key, suffix = member.name.split(".", 1)
                        if current and current["__key__"] != key:
                            yield current
                            current = {}
                        current["__key__"] = key
                        current[suffix] = tar.extractfile(member).read()
                    if current:
                        yield current

    for sample in StatefulDataLoader(Tars(), batch_size=None):
        yield sample["jpg"]


def _litdata_fn(url: str) -> Iterator[dict]:
    import litdata as ld

    for sample in ld.iter_webdataset_tar(url):
        yield {"key": sample["__key__"], "jpg": sample["jpg"], "txt": sample["txt"].decode()}


def litdata_convert(urls: list[str], out: Path) -> float:
    import litdata as ld

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    ld.optimize(fn=_litdata_fn, inputs=urls, output_dir=str(out), chunk_bytes="64MB", num_workers=1, mode="overwrite")
    return time.perf_counter() - start


def litdata_pass(out: Path) -> Iterator[bytes]:
    import litdata as ld

    for sample in ld.StreamingDataset(str(out)):
        yield sample["jpg"]


def best(run: Callable[[], Iterator[bytes]], decode: bool, repeats: int) -> tuple[int, float]:
    times, n = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = 0
        for data in run():
            if decode:
                _decode(data)
            n += 1
        times.append(time.perf_counter() - start)
    return n, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--per-shard", type=int, default=100)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vitcap-readers-"))
    urls = write_shards(work / "shards", args.images, args.per_shard, args.size)
    result: dict = {"bench": "shard_readers", "cpu": cpu_name(), "images": args.images, "shards": len(urls)}
    candidates = {"webdataset": lambda: webdataset_pass(urls), "torchdata": lambda: torchdata_pass(urls)}
    if importlib.util.find_spec("litdata"):
        result["litdata_optimize_s"] = round(litdata_convert(urls, work / "litdata"), 2)
        candidates["litdata"] = lambda: litdata_pass(work / "litdata")
    for name, run in candidates.items():
        if not importlib.util.find_spec(name):
            result[name] = "not installed"
            continue
        raw_n, raw_s = best(run, False, args.repeats)
        dec_n, dec_s = best(run, True, args.repeats)
        assert raw_n == dec_n == args.images, (name, raw_n, dec_n)
        result[name] = {"raw_samples_per_s": round(raw_n / raw_s), "decoded_samples_per_s": round(dec_n / dec_s)}
    result["load_avg"] = load_avg()
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
