"""WebDataset tar shards: reading (the `webdataset` library), counting, the training and evaluation streams, the
resumable `ShardLoader`, and writing shards (`vitcap data shards`). No Lightning here; the data modules use these
through `vitcap.data.datamodules.shards`. Needs the `shards` extra (`pip install 'vitcap[shards]'`).

The names load on first use, so `vitcap.data.shards.index` (pattern expansion, counting) imports without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitcap.lazy import lazy_exports

if TYPE_CHECKING:  # for type checkers and the architecture check
    from vitcap.data.shards.index import INDEX_NAME, Shard, ShardSet, expand_shards, is_shard_spec, shard_set
    from vitcap.data.shards.loader import ShardLoader
    from vitcap.data.shards.reader import ShardWarning, SkipSample, iter_shard
    from vitcap.data.shards.stream import EvalStream, StreamPlan, TrainStream

_EXPORTS = {
    "INDEX_NAME": "index",
    "Shard": "index",
    "ShardSet": "index",
    "expand_shards": "index",
    "is_shard_spec": "index",
    "shard_set": "index",
    "ShardLoader": "loader",
    "ShardWarning": "reader",
    "SkipSample": "reader",
    "iter_shard": "reader",
    "EvalStream": "stream",
    "StreamPlan": "stream",
    "TrainStream": "stream",
}

__all__ = [
    "INDEX_NAME",
    "EvalStream",
    "Shard",
    "ShardLoader",
    "ShardSet",
    "ShardWarning",
    "SkipSample",
    "StreamPlan",
    "TrainStream",
    "expand_shards",
    "is_shard_spec",
    "iter_shard",
    "shard_set",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
