"""LightningDataModules for captioning and classification.

Both expose, right after ``__init__``, what a model needs before it is built (LightningCLI links these):
``CaptionDataModule``: ``vocab_size``, ``pad_id``, ``bos_id``, ``eos_id``, ``tokenizer``, ``tokenizer_json``,
``img_size``, ``preprocessing``, ``class_names`` (shapes only); ``ClassificationDataModule``: ``num_classes``, ``class_names``, ``img_size``,
``in_chans``, ``preprocessing``. Reading the data and training the tokenizer happen lazily on first access.
These are the only data modules that import Lightning.
"""

from vitcap.data.datamodules.captioning import CaptionDataModule
from vitcap.data.datamodules.classification import ClassificationDataModule

__all__ = ["CaptionDataModule", "ClassificationDataModule"]
