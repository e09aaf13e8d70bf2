"""Accumulation and synchronisation of the metric states: batches, merged objects, real 2-process sync."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from vitcap.metrics import CaptionBLEU, CaptionCIDErD, CaptionMetrics, CaptionROUGEL, to_points
from vitcap.metrics.cider import decode_samples, encode_batch

CANDIDATES = [
    "A dog runs on the grass.",
    "a man riding a horse",
    "Two children play in the snow!",
    "a a a dog dog",
    "",
    "A woman (in red) holds an umbrella.",
    "a brown dog runs on the beach",
]
REFERENCES = [
    ["A dog is running on grass .", "a brown dog runs", "The dog runs across a lawn."],
    ["A man rides a horse .", "a person on a horse"],
    ["Two kids playing in snow", "children in the snow", "two children sledding"],
    ["a dog", "a small dog barks"],
    ["a cat sleeps"],
    ["A woman holding an umbrella in the rain", "a lady with a red umbrella"],
    ["A dog runs along the beach .", "a dog on the sand"],
]
METRIC_TYPES = [CaptionMetrics, CaptionBLEU, CaptionROUGEL, CaptionCIDErD]


def as_floats(result: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()} if isinstance(result, dict) else {"value": float(result)}


@pytest.mark.parametrize("metric_type", METRIC_TYPES)
def test_batched_updates_equal_one_update(metric_type: type) -> None:
    whole, batched = metric_type(), metric_type()
    whole.update(CANDIDATES, REFERENCES)
    for start in (0, 2, 3, 6):
        end = {0: 2, 2: 3, 3: 6, 6: 7}[start]
        batched.update(CANDIDATES[start:end], REFERENCES[start:end])
    expected = as_floats(whole.compute())
    got = as_floats(batched.compute())
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


@pytest.mark.parametrize("metric_type", METRIC_TYPES)
def test_merge_state_equals_one_pass(metric_type: type) -> None:
    whole, first, second = metric_type(), metric_type(), metric_type()
    whole.update(CANDIDATES, REFERENCES)
    first.update(CANDIDATES[:4], REFERENCES[:4])
    second.update(CANDIDATES[4:], REFERENCES[4:])
    first.merge_state(second)
    expected, got = as_floats(whole.compute()), as_floats(first.compute())
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-12), key


def test_cider_depends_on_the_whole_corpus() -> None:
    # Document frequencies span all images: scoring halves separately and averaging is NOT the same,
    # which is why CIDEr-D keeps the samples instead of a running mean.
    whole, first, second = CaptionCIDErD(), CaptionCIDErD(), CaptionCIDErD()
    whole.update(CANDIDATES, REFERENCES)
    first.update(CANDIDATES[:4], REFERENCES[:4])
    second.update(CANDIDATES[4:], REFERENCES[4:])
    mean_of_parts = (float(first.compute()) * 4 + float(second.compute()) * 3) / 7
    assert abs(float(whole.compute()) - mean_of_parts) > 1e-3


def test_byte_state_survives_concatenation_padding_and_unicode() -> None:
    cands, refs = ["café crème", "", "a dog"], [["naïve ☺ résumé", "x"], ["a"], ["", "b c"]]
    state = [encode_batch(cands[:2], refs[:2]), encode_batch(cands[2:], refs[2:])]
    # A gather that concatenates ranks and pads with zeros (and casts an empty rank's float tensor) must decode
    # to the same samples.
    padded = torch.cat([state[0], torch.zeros(5, dtype=torch.uint8), state[1].float(), torch.zeros(3)])
    assert decode_samples(state) == (cands, refs)
    assert decode_samples(padded) == (cands, refs)
    with pytest.raises(ValueError, match="reserved control character"):
        encode_batch(["a\x1fb"], [["c"]])


def test_compute_keys_and_points_helper() -> None:
    metric = CaptionMetrics()
    metric.update(CANDIDATES, REFERENCES)
    out = metric.compute()
    assert list(out) == [
        "bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider_d",
        "distinct_ratio", "vocab_used", "repeat_word_share", "repeat_ngram_share", "mean_length",
    ]  # fmt: skip
    assert all(v.ndim == 0 and v.dtype == torch.float64 for v in out.values())
    assert float(out["repeat_word_share"]) == pytest.approx(1 / 7)  # "a a a dog dog"
    points = to_points(out)
    assert float(points["bleu4"]) == pytest.approx(100 * float(out["bleu4"]))
    assert float(points["cider_d"]) == pytest.approx(100 * float(out["cider_d"]))
    assert float(points["vocab_used"]) == float(out["vocab_used"])


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_as_module_attribute_states_move_and_stay_out_of_checkpoints() -> None:
    module = nn.Module()
    module.val_metrics = CaptionMetrics()
    module.val_metrics.update(CANDIDATES[:2], REFERENCES[:2])
    module.to(torch.float64).to("cpu")  # Lightning-style dtype/device moves must not corrupt the states
    assert not module.state_dict()  # metric states are not persistent: checkpoints do not change
    module.val_metrics.update(CANDIDATES[2:], REFERENCES[2:])
    reference = CaptionMetrics()
    reference.update(CANDIDATES, REFERENCES)
    assert as_floats(module.val_metrics.compute()) == pytest.approx(as_floats(reference.compute()), abs=1e-12)
    module.val_metrics.reset()
    with pytest.raises(RuntimeError, match="before any update"):
        module.val_metrics.compute()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_states_on_cuda() -> None:
    metric = CaptionMetrics().to("cuda")
    metric.update(CANDIDATES, REFERENCES)
    assert metric.samples[0].device.type == "cuda" and metric.guess.device.type == "cuda"
    reference = CaptionMetrics()
    reference.update(CANDIDATES, REFERENCES)
    assert as_floats(metric.compute()) == pytest.approx(as_floats(reference.compute()), abs=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sync_worker(rank: int, world_size: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        metric = CaptionMetrics()
        # Uneven shards (4 and 3 images, different byte lengths) exercise the padded all-gather.
        shard = slice(0, 4) if rank == 0 else slice(4, None)
        metric.update(CANDIDATES[shard], REFERENCES[shard])
        queue.put((rank, as_floats(metric.compute())))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs the fork start method")
def test_sync_across_two_processes_equals_one_pass() -> None:
    # fork, not spawn: children reuse the imported torch instead of paying ~10 s each to import it again.
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_sync_worker, args=(rank, 2, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    reference = CaptionMetrics()
    reference.update(CANDIDATES, REFERENCES)
    expected = as_floats(reference.compute())
    for rank in (0, 1):
        assert results[rank] == pytest.approx(expected, abs=1e-12)
