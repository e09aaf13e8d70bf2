"""How fast an encoder learns the shapes: val accuracy of a shapes classifier after N steps (one JSON line).

Classification of the built-in shapes (10 classes: 5 shapes x 2 sizes, 64 px) is the part of the demo captioner's
job that limits its learning; this proxy compares encoders at a fraction of a captioning run's cost.

    python bench/shape_learning.py --encoder cnn --steps 600
    python bench/shape_learning.py --encoder vit-conv --steps 600
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vitcap.data import ClassificationDataModule
from vitcap.models.registry import create_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

ENCODERS = {
    "vit-patch": ("tiny", {}),
    "vit-conv": ("tiny", {"stem": "conv"}),
    "vit-conv2": ("tiny", {"stem": "conv", "stem_depth": 2}),
    "cnn": ("cnn-tiny", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="cnn")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up steps")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dm = ClassificationDataModule(data="shapes", img_size=64, batch_size=64, num_train=8000, num_val=500,
                                  num_test=10, augment=False)  # fmt: skip
    dm.setup("fit")
    val = list(dm.val_dataloader())
    preset, encoder = ENCODERS[args.encoder]
    pool = "mean" if args.encoder == "cnn" else "token"
    model = create_classifier(preset, num_classes=10, encoder={**encoder, "img_size": 64}, pool=pool)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / args.warmup) if args.warmup else 1.0)
    start, step, curve = time.process_time(), 0, {}
    while step < args.steps:
        for batch in dm.train_dataloader():
            model.train()
            loss = F.cross_entropy(model(batch["images"]), batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            warmup.step()
            step += 1
            if step % args.eval_every == 0:
                model.eval()
                with torch.no_grad():
                    correct = sum(int((model(v["images"]).argmax(-1) == v["labels"]).sum()) for v in val)
                curve[step] = round(correct / sum(len(v["labels"]) for v in val), 3)
            if step >= args.steps:
                break
    print(json.dumps({"bench": "shape_learning", "encoder": args.encoder, "steps": args.steps, "lr": args.lr,
                      "warmup": args.warmup, "threads": args.threads, "cpu_s": round(time.process_time() - start, 1),
                      "val_acc_by_step": curve, "load_avg_1m": os.getloadavg()[0], **machine()}))  # fmt: skip


if __name__ == "__main__":
    main()
