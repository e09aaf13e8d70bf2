"""Command lines: one LightningCLI behind `train.py` / `vitcap fit|validate|test|predict`, and the `vitcap` tools.

`vitcap caption`, `classify`, `evaluate`, `data` and `export` are plain argparse programs mounted here, so every
entry point shares one dispatcher and one error style (a one-line message naming the file or key, exit status 2).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: vitcap COMMAND [ARGS]

training (LightningCLI; `python train.py COMMAND` is the same):
  fit        train a model from a YAML config:        vitcap fit --config configs/demo/shapes_caption_vit.yaml
  validate   evaluate a checkpoint on the validation split
  test       evaluate a checkpoint on the test split
  predict    write captions / class predictions of a checkpoint to a JSON file

tools:
  caption    caption images with a trained checkpoint
  classify   classify images with a trained checkpoint
  evaluate   score predicted captions against references (BLEU, ROUGE-L, CIDEr-D)
  data       write the built-in synthetic data set to disk (`vitcap data shapes --out DIR`)
  export     write a checkpoint as safetensors weights + a JSON config

`vitcap COMMAND --help` shows a command's options.
"""


def _quiet_lightning() -> None:
    # Lightning advertises a cloud logger on every run; it is noise in a research tool's output.
    os.environ.setdefault("LITLOGGER_DISABLE_TIP", "1")
    import warnings

    warnings.filterwarnings("ignore", message=".*litlogger.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def lightning_cli(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """Run the LightningCLI (fit/validate/test/predict) on `args` (default: sys.argv[1:])."""
    _quiet_lightning()
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.cli import LightningCLI

    from vitcap.tasks import VitcapTask
    from vitcap.tasks.callbacks import JsonPredictionWriter

    class VitcapCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            # The data module knows these before the model is built; linking them keeps YAMLs from repeating them.
            for source, target in [
                ("data.vocab_size", "vocab_size"),
                ("data.pad_id", "pad_id"),
                ("data.bos_id", "bos_id"),
                ("data.eos_id", "eos_id"),
                ("data.tokenizer_json", "tokenizer"),
                ("data.num_classes", "num_classes"),
                ("data.class_names", "class_names"),
                ("data.in_chans", "in_chans"),
                ("data.img_size", "img_size"),
                ("data.preprocessing", "preprocessing"),
            ]:
                parser.link_arguments(source, f"model.init_args.{target}", apply_on="instantiate")

        def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> Any:
            parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
            if subcommand == "predict":
                parser.add_argument(
                    "--output", default="predictions.json", help="JSON file the predictions are written to"
                )
            return parser

        def before_predict(self) -> None:
            output = self.config["predict"].get("output", "predictions.json")
            self.trainer.callbacks.append(JsonPredictionWriter(output))

    return VitcapCLI(
        VitcapTask,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults={
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}},
        },
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
    )


def _tool(module: str, name: str = "main") -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).__dict__[name](argv)

    return run


def _data_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: vitcap data shapes --out DIR [--num N] [--seed S] [--img-size P]")
        return 0 if argv else 2
    if argv[0] != "shapes":
        print(f"vitcap data: unknown data set {argv[0]!r}; available: shapes", file=sys.stderr)
        return 2
    from vitcap.data.shapes import shapes_main

    return shapes_main(argv[1:])


TOOLS: dict[str, Callable[[list[str]], int]] = {
    "caption": _tool("vitcap.predict", "caption_main"),
    "classify": _tool("vitcap.predict", "classify_main"),
    "evaluate": _tool("vitcap.metrics.evaluate"),
    "data": lambda argv: _data_main(argv),
    "export": _tool("vitcap.predict", "export_main"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `vitcap` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        lightning_cli([command, *rest])
        return 0
    if command not in TOOLS:
        print(f"vitcap: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return TOOLS[command](rest)


def train_main() -> None:
    """Entry point of `train.py`: the LightningCLI alone."""
    lightning_cli()
