"""Callbacks vitcap adds to Lightning's: the JSON prediction writer used by `predict`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter


class JsonPredictionWriter(BasePredictionWriter):
    """Write every prediction of `predict` to one JSON file (a list of objects), atomically.

    Args:
        output: Path of the JSON file; its folder is created.
    """

    def __init__(self, output: str | Path = "predictions.json") -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("JsonPredictionWriter writes from one process: run predict with devices=1")
        rows: list[dict[str, Any]] = []
        for batch in predictions:
            rows.extend(batch)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.output.with_name(self.output.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.output)
        print(f"wrote {len(rows)} predictions to {self.output}")
