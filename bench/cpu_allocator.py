"""CPU training speed with glibc's default malloc settings vs ``vitcap.runtime.keep_freed_memory``.

The allocator is set once per process, so each round runs one child process per setting (the order alternating
every round) and the ratio is the median of the per-round ratios. A child builds the model of a recipe config
(``model.init_args`` of the YAML, random init, the same oneDNN linears as training), runs ``--warmup`` untimed
and ``--steps`` timed training steps (forward + backward + AdamW) on a fixed random batch, and reports images/s.
Prints one JSON line.

    python bench/cpu_allocator.py --config configs/fashion_mnist_vit.yaml --threads 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, load_avg  # noqa: E402

SETTINGS = {"system": "system", "vitcap": "tuned"}  # name -> VITCAP_MALLOC


def child(args: argparse.Namespace) -> None:
    import torch
    import torch.nn.functional as F
    import yaml

    from vitcap.runtime import keep_freed_memory
    from vitcap.tasks import ClassificationTask
    from vitcap.tasks.optim import adamw, param_groups

    applied = keep_freed_memory()  # a no-op under VITCAP_MALLOC=system
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = yaml.safe_load(Path(args.config).read_text())
    init = dict(config["model"]["init_args"])
    data = config["data"]["init_args"]
    size, chans = data.get("img_size", 28), data.get("in_chans", 3)
    task = ClassificationTask(
        preset=init.get("preset", "tiny"),
        encoder=init.get("encoder"),
        class_names=[str(i) for i in range(10)],
        preprocessing={"img_size": size, "in_chans": chans},
    )
    task.configure_model()
    model = task.model.train()
    optimizer = adamw(param_groups(model), lr=1e-3, weight_decay=0.05)
    images, labels = torch.randn(args.batch, chans, size, size), torch.randint(0, 10, (args.batch,))

    def step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    print(json.dumps({"img_per_s": args.steps * args.batch / (time.perf_counter() - start), "applied": applied}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/fashion_mnist_vit.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    rates: dict[str, list[float]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    for round_ in range(args.rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            env = {**os.environ, "VITCAP_MALLOC": SETTINGS[name], "OMP_NUM_THREADS": str(args.threads)}
            out = subprocess.run(
                [sys.executable, __file__, "--child", *sys.argv[1:]],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if result["applied"] != (name == "vitcap"):
                raise SystemExit(f"bench/cpu_allocator.py: the {name} child did not get its allocator setting")
            rates[name].append(result["img_per_s"])
    ratios = [t / s for t, s in zip(rates["vitcap"], rates["system"], strict=True)]
    print(
        json.dumps(
            {
                "bench": "cpu_allocator",
                "config": args.config,
                "cpu": cpu_name(),
                "threads": args.threads,
                "batch": args.batch,
                "steps": args.steps,
                "rounds": args.rounds,
                "load_avg": load_avg(),
                "img_per_s_system": round(statistics.median(rates["system"]), 1),
                "img_per_s_vitcap": round(statistics.median(rates["vitcap"]), 1),
                "speedup": round(statistics.median(ratios), 3),
                "per_round": [round(r, 3) for r in ratios],
            }
        )
    )


if __name__ == "__main__":
    main()
