"""Train, validate, test or predict from a YAML config: `python train.py fit --config configs/demo/shapes_caption_vit.yaml`.

A thin shim over `vitcap.cli.train`; `vitcap fit ...` is the same program.
"""

from vitcap.cli.train import train_main

if __name__ == "__main__":
    train_main()
