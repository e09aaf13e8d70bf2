"""Training compute of a config: FLOPs of one optimizer step (forward + backward, torch's FLOP counter) x steps.

Prints one JSON line. The FLOPs are counted on the first training batch of the config's own data module with the
plain `F.linear` path (the FLOP counter counts aten matmuls and convolutions; the oneDNN linears do the same
arithmetic), so the figure depends on the recipe only, never on the machine.

    python bench/demo_compute.py --config configs/demo/shapes_caption_cnn.yaml [--trainer.max_epochs 2 ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

from vitcap.cli.train import lightning_cli  # noqa: E402


def measure(argv: list[str]) -> dict:
    """FLOPs of one optimizer step of the config `argv` (a `train.py` command line without `fit`), and its steps."""
    cli = lightning_cli([*argv, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"], run=False)
    task, dm, trainer = cli.model, cli.datamodule, cli.trainer
    dm.setup("fit")
    loader = dm.train_dataloader()
    batch = next(iter(loader))
    task.train()
    counter = FlopCounterMode(display=False)
    with counter:
        # The loss without `self.log` (which needs a running loop); a joint model's class head (one linear layer
        # on pooled tokens) is left out.
        loss = task.training_step(batch, 0) if not hasattr(task, "_loss") else task._loss(batch)[0]
        loss.backward()
    flops = int(counter.get_total_flops())
    accumulate = trainer.accumulate_grad_batches
    steps = len(loader) // accumulate * max(1, trainer.max_epochs or 1)
    if trainer.max_steps and trainer.max_steps > 0:  # a step budget ends the run first
        steps = min(steps, trainer.max_steps)
    return {
        "bench": "demo_compute",
        "config": argv,
        "cpu": cpu_name(),
        "torch": torch.__version__,
        "batch": int(batch["images"].shape[0]),
        "gflop_per_step": round(flops / 1e9, 3),
        "optimizer_steps": steps,
        "total_pflop": round(flops * steps / 1e15, 4),
        "params_m": round(sum(p.numel() for p in task.model.parameters()) / 1e6, 3),
    }


def main(argv: list[str]) -> None:
    print(json.dumps(measure(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
