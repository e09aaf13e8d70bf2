"""LightningModules: each task owns its loss, label shift, metrics and logging."""

from vitcap.tasks.base import VitcapTask
from vitcap.tasks.captioning import CaptioningTask
from vitcap.tasks.classification import ClassificationTask, MixupConfig
from vitcap.tasks.joint import JointTask, LossWeights
from vitcap.tasks.optim import OptimConfig

__all__ = [
    "CaptioningTask",
    "ClassificationTask",
    "JointTask",
    "LossWeights",
    "MixupConfig",
    "OptimConfig",
    "VitcapTask",
]
