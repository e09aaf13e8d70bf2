"""Self-critical training: settings, advantages, the gradient's sign, and the whole stage through `train.py fit`."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, caption_args
from vitcap.cli.main import main
from vitcap.cli.train import lightning_cli
from vitcap.errors import ConfigError
from vitcap.generate import GenerationConfig
from vitcap.metrics.cider import cider_d
from vitcap.metrics.tokenize import coco_tokenize
from vitcap.models.registry import create_captioner
from vitcap.tasks import CaptioningTask
from vitcap.tasks.scst import ScstConfig, ScstReward, advantages, scst_step
from vitcap.tokenizer import CaptionTokenizer


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("vitcap: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "fields, key",
    [
        ({"num_samples": 1}, "model.scst.num_samples"),  # the mean of the *other* samples needs two
        ({"num_samples": 0, "baseline": "greedy"}, "model.scst.num_samples"),
        ({"baseline": "beam"}, "model.scst.baseline"),
        ({"temperature": 0.0}, "model.scst.temperature"),
        ({"max_length": 0}, "model.scst.max_length"),
    ],
)
def test_bad_settings_name_their_key(fields: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        ScstConfig(**fields)
    assert error.value.key == key
    ScstConfig(num_samples=1, baseline="greedy")  # one sample is fine against the greedy caption


def test_bad_setting_on_the_command_line_is_one_line(tmp_path: Path, capsys) -> None:
    args = caption_args(tmp_path, "--model.objective", "scst", "--model.scst.temperature", "-1")
    assert main(["fit", *args]) == 2
    assert "model.scst.temperature: expected > 0" in one_error_line(capsys.readouterr().err)


def test_scst_settings_without_the_objective_are_refused(tmp_path: Path, capsys) -> None:
    assert main(["fit", *caption_args(tmp_path, "--model.scst.num_samples", "3")]) == 2
    assert "model.scst: SCST settings are given but model.objective is 'xe'" in one_error_line(capsys.readouterr().err)


# -------------------------------------------------------------------------------------------------- advantages
def test_mean_baseline_leaves_each_sample_out() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]])
    advantage, baseline = advantages(rewards, "mean")
    assert torch.allclose(baseline, torch.tensor([[2.5, 2.0, 1.5], [1.5, 1.5, 0.0]]))
    assert torch.allclose(advantage, rewards - baseline)
    greedy_adv, greedy_base = advantages(rewards, "greedy", torch.tensor([2.0, 1.0]))
    assert torch.allclose(greedy_adv, torch.tensor([[-1.0, 0.0, 1.0], [-1.0, -1.0, 2.0]]))
    assert torch.allclose(greedy_base[:, 0], torch.tensor([2.0, 1.0]))


class _Reward:
    """A reward over token ids: `fn(ids) -> float` for every sample."""

    def __init__(self, fn) -> None:  # noqa: ANN001
        self.fn = fn

    def __call__(self, image_ids, captions, group):  # noqa: ANN001, ANN204
        return [float(self.fn(c)) for c in captions]


def _toy(vocab_size: int = 12, seed: int = 0):
    torch.manual_seed(seed)
    model = create_captioner("toy", vocab_size=vocab_size)
    images = torch.randn(4, 3, 32, 32)
    return model, images


def test_equal_samples_have_zero_advantage_and_no_gradient() -> None:
    model, images = _toy()
    # A near-zero temperature draws the most probable token every time: the k samples of an image are equal.
    config = ScstConfig(num_samples=4, temperature=1e-4)
    out = scst_step(
        model, model.encode(images), ["a", "b", "c", "d"], _Reward(lambda ids: len(ids)), config,
        GenerationConfig(max_length=8), bos_id=1, eos_id=2, pad_id=0,
    )  # fmt: skip
    assert out.distinct == pytest.approx(1 / 4)
    assert torch.equal(out.advantages, torch.zeros(4, 4))
    out.loss.backward()
    assert float(out.loss) == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_reward_for_a_token_raises_its_probability(sign: float) -> None:
    """The gradient has the right sign: rewarding token 7 makes it likelier within a few steps (and punishing it,
    less likely)."""
    model, images = _toy(seed=1)
    favoured = 7

    def first_token_prob() -> float:
        with torch.no_grad():
            logits = model.forward_memory(model.encode(images), torch.full((4, 1), 1))
        return float(logits[:, -1].softmax(-1)[:, favoured].mean())

    reward = _Reward(lambda ids: sign * sum(t == favoured for t in ids))
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = first_token_prob()
    torch.manual_seed(0)
    for _ in range(5):
        out = scst_step(
            model, model.encode(images), ["a", "b", "c", "d"], reward, ScstConfig(num_samples=6),
            GenerationConfig(max_length=6), bos_id=1, eos_id=2, pad_id=0,
        )  # fmt: skip
        optim.zero_grad()
        out.loss.backward()
        optim.step()
    after = first_token_prob()
    assert (after > 1.5 * before) if sign > 0 else (after < before / 1.5), (before, after)


def test_greedy_baseline_decodes_in_eval_mode_and_restores_training() -> None:
    model, images = _toy()
    model.train()
    out = scst_step(
        model, model.encode(images), ["a", "b", "c", "d"], _Reward(lambda ids: len(ids)),
        ScstConfig(num_samples=2, baseline="greedy"), GenerationConfig(max_length=6), bos_id=1, eos_id=2, pad_id=0,
    )  # fmt: skip
    assert model.training
    assert out.baselines.shape == (4, 2) and torch.equal(out.baselines[:, 0], out.baselines[:, 1])
    assert torch.isfinite(out.loss)


def test_beam_candidates_as_samples() -> None:
    """`sample_method: beam`: the k best beams of each image are the samples (k rows per image even when beam
    search finds fewer distinct captions)."""
    model, images = _toy()
    out = scst_step(
        model, model.encode(images), ["a", "b", "c", "d"], _Reward(lambda ids: sum(ids)),
        ScstConfig(num_samples=3, sample_method="beam"), GenerationConfig(max_length=6), bos_id=1, eos_id=2, pad_id=0,
    )  # fmt: skip
    assert out.rewards.shape == (4, 3) and out.sample_length.shape == (12,)
    assert out.distinct > 1 / 3  # the beams of an image differ (samples from a random model would too)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.any() for p in model.parameters())


def test_reward_is_the_evaluation_cider_with_training_document_frequencies() -> None:
    """`ScstReward` of token ids = the evaluation metric's score of the decoded caption, on the same corpus."""
    refs = [
        ["a red square", "there is a red square", "an image of a small red square."],
        ["a blue circle", "a large blue circle", "the circle is blue"],
        ["a green t-shirt", "a man's green t-shirt", "green shirt"],
    ]
    tok = CaptionTokenizer.train([r for rs in refs for r in rs])
    reward = ScstReward(tok, ["x", "y", "z"], refs, include_eos=False)
    samples = ["a red square.", "a blue square", "a man's t-shirt"]
    ids = [tok.encode(s) for s in samples]
    ours = reward(["x", "y", "z"], ids, 1)
    # The evaluation metric on the decoded captions, with the three images as the corpus (its document frequencies).
    _, per_image = cider_d(
        [coco_tokenize(tok.decode(row)) for row in ids], [[coco_tokenize(r) for r in rs] for rs in refs]
    )
    assert ours == pytest.approx(per_image, abs=1e-9)
    assert ours[0] > 1.0 and ours[1] < ours[0]


# ------------------------------------------------------------------------------------------- through the CLI
SCST = ["--model.objective", "scst", "--model.monitor", "val/cider_d", "--data.group_captions", "true"]


def test_scst_stage_trains_from_a_checkpoint_and_logs(caption_run, tmp_path: Path) -> None:
    _, _, ckpt = caption_run
    args = caption_args(
        tmp_path, *SCST, "--model.init_from", str(ckpt), "--model.optim.lr", "0.0003", "--trainer.max_epochs", "1",
        "--trainer.log_every_n_steps", "1",
    )  # fmt: skip
    cli = lightning_cli(["fit", *args])
    assert cli.trainer.current_epoch == 1 and cli.trainer.global_step == 4  # a fresh run: 128 images / 32
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = {k for r in rows for k, v in r.items() if v}
    for name in ("reward", "reward_std", "baseline", "advantage", "sample_length", "distinct", "reward_time_share"):
        assert f"train/scst_{name}" in logged, name
    rewards = [float(r["train/scst_reward"]) for r in rows if r.get("train/scst_reward")]
    assert all(0 <= r <= 1000 for r in rewards) and max(rewards) > 0
    shares = [float(r["train/scst_reward_time_share"]) for r in rows if r.get("train/scst_reward_time_share")]
    assert all(0 < s < 0.5 for s in shares), shares  # the reward is a small part of the step
    assert "val/cider_d" in logged
    best = cli.trainer.checkpoint_callback.best_model_path
    assert best and torch.load(best, weights_only=True)["vitcap"]["task"] == "captioning"


def test_scst_with_bf16_clipping_and_accumulation(caption_run, tmp_path: Path) -> None:
    _, _, ckpt = caption_run
    args = caption_args(
        tmp_path, *SCST, "--model.init_from", str(ckpt), "--model.scst", '{"baseline": "greedy", "num_samples": 3, "xe_weight": 0.5}',
        "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.0",
        "--trainer.accumulate_grad_batches", "2", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0",
    )  # fmt: skip
    cli = lightning_cli(["fit", *args])
    assert cli.trainer.global_step == 1
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/xe_loss"])  # the mixed objective's XE term


def test_scst_trains_with_two_processes(caption_run, tmp_path: Path) -> None:
    _, _, ckpt = caption_run
    args = caption_args(
        tmp_path, *SCST, "--model.init_from", str(ckpt), "--trainer.devices", "2", "--trainer.strategy", "ddp",
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "0",
    )  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "train.py", "fit", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    state = torch.load(tmp_path / "lightning_logs" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 2


def test_scst_needs_a_caption_data_module() -> None:
    task = CaptioningTask(tokenizer=CaptionTokenizer.train(["a b"]).to_json(), preset="toy", objective="scst")
    with pytest.raises(ConfigError, match="caption data module") as error:
        task._build_reward()  # no trainer, no data module
    assert error.value.key == "model.objective"
