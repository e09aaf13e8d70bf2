"""Fashion-MNIST recipe probes: the recipe's model and data module in a plain loop, for short comparisons.

The probes behind the "Fashion-MNIST recipe" tables in docs/BENCHMARKS.md: train for ``--epochs`` (a warm-up +
cosine schedule sized for them, as the task does), evaluate on the held-out 10% after every epoch, print one JSON
line with the final accuracy, the per-epoch curve ``[seconds, accuracy %, last train loss]`` and the settings.
Defaults are the first recipe (conv stem, depth 4, pad-crop + flips). ``--stem W:S,W:S,...`` swaps in a conv stem
of 3x3 conv + BN + ReLU layers (width W, stride S) and a 1x1 projection, for layouts ``stem_depth`` does not
express; ``--cnn`` trains a small CNN instead, for scale; ``--steps N`` only times N training steps.

    python bench/fashion_probe.py --epochs 1 --no-augment
    python bench/fashion_probe.py --epochs 1 --no-augment --stem 32:1,64:2,64:1,128:2,128:1 \\
        --encoder '{"img_size": 28, "patch_size": 4, "embed_dim": 128, "depth": 2, "num_heads": 4, "drop_path_rate": 0.05, "stem": "conv"}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vitcap.data import ClassificationDataModule
from vitcap.runtime import keep_freed_memory
from vitcap.tasks import ClassificationTask
from vitcap.tasks.optim import adamw, param_groups, warmup_cosine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

FIRST_RECIPE = {"img_size": 28, "patch_size": 4, "embed_dim": 128, "depth": 4, "num_heads": 4,
                "drop_path_rate": 0.05, "stem": "conv"}  # fmt: skip


def conv_bn_relu(width_in: int, width: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(width_in, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]


def small_cnn() -> nn.Module:
    return nn.Sequential(*conv_bn_relu(1, 32, 1), *conv_bn_relu(32, 32, 1), nn.MaxPool2d(2),
                         *conv_bn_relu(32, 64, 1), *conv_bn_relu(64, 64, 1), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 49, 256), nn.ReLU(), nn.Linear(256, 10))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/fashion-mnist")
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=0.05, help="fraction of the steps")
    parser.add_argument("--label-smoothing", type=float, default=0.1)
    parser.add_argument("--encoder", default=json.dumps(FIRST_RECIPE), help="ViTEncoder settings as JSON")
    parser.add_argument("--pool", default="token", choices=("token", "mean"))
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--no-hflip", action="store_true")
    parser.add_argument("--crop", default="pad", choices=("pad", "rrc", "none"))
    parser.add_argument("--stem", default="", help="replace the conv stem: W:S,W:S,... (width:stride)")
    parser.add_argument("--cnn", action="store_true", help="a small CNN instead of the ViT")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--steps", type=int, default=0, help="only time this many training steps")
    args = parser.parse_args()
    keep_freed_memory()  # as train.py does
    torch.manual_seed(0)
    dm = ClassificationDataModule(data="fashion_mnist", root=args.root, img_size=28, in_chans=1, val_fraction=0.1,
                                  batch_size=args.batch, augment=not args.no_augment, hflip=not args.no_hflip,
                                  crop=args.crop)  # fmt: skip
    dm.setup("fit")
    task = ClassificationTask(encoder=json.loads(args.encoder), class_names=dm.class_names, preprocessing=dm.preprocessing,
                              pool=args.pool, label_smoothing=args.label_smoothing)  # fmt: skip
    task.configure_model()
    model: nn.Module = task.model
    if args.stem:
        layers: list[nn.Module] = []
        width_in = 1
        for width, stride in (map(int, item.split(":")) for item in args.stem.split(",")):
            layers += conv_bn_relu(width_in, width, stride)
            width_in = width
        layers.append(nn.Conv2d(width_in, task.model.encoder.embed_dim, 1))
        task.model.encoder.model.patch_embed.proj = nn.Sequential(*layers)
    if args.cnn:
        model = small_cnn()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    total = args.steps or int(args.epochs * len(train))
    optimizer = adamw(param_groups(model), lr=args.lr, weight_decay=args.weight_decay)
    schedule = warmup_cosine(optimizer, total, warmup=args.warmup, min_lr_ratio=0.01)

    def evaluate() -> float:
        model.eval()
        correct = seen = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            for batch in val:
                correct += int((model(batch["images"]).argmax(-1) == batch["labels"]).sum())
                seen += len(batch["labels"])
        model.train()
        return correct / seen

    step, curve, start = 0, [], time.perf_counter()
    model.train()
    while step < total:
        for batch in train:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                logits = model(batch["images"])
            loss = F.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= total:
                break
        if not args.steps and (step % len(train) == 0 or step >= total):
            curve.append([round(time.perf_counter() - start), round(100 * evaluate(), 2), round(loss.item(), 3)])
    seconds = time.perf_counter() - start
    result = {"bench": "fashion_probe", "params": sum(p.numel() for p in model.parameters()), **vars(args)}
    if args.steps:
        result["img_per_s"] = round(args.steps * args.batch / seconds, 1)
    else:
        result.update(acc=curve[-1][1], seconds=round(seconds), curve=curve)
    result.update(machine())  # CPU model and flags, threads, torch, linear backend
    print(json.dumps(result))


if __name__ == "__main__":
    main()
