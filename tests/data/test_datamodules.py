import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitcap.data.datamodules import CaptionDataModule
from vitcap.data.shapes import make_scene, render_scene
from vitcap.data.transforms import build_eval_transform
from vitcap.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CaptionTokenizer

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
FLICKR = SHARED_DATA / "flickr8k-mini"


def _shapes_dm(**kwargs) -> CaptionDataModule:
    defaults = dict(num_train=24, num_val=6, num_test=5, batch_size=8, eval_batch_size=4, img_size=32, augment=False)
    return CaptionDataModule(**{**defaults, **kwargs})


def test_model_facing_properties_before_setup():
    dm = _shapes_dm()
    assert (dm.pad_id, dm.bos_id, dm.eos_id) == (PAD_ID, BOS_ID, EOS_ID)
    assert dm.img_size == 32 and dm.preprocessing["img_size"] == 32
    assert 30 < dm.vocab_size < 50
    tok = CaptionTokenizer.from_json(dm.tokenizer_json)
    assert tok.vocab_size == dm.vocab_size
    assert build_eval_transform(dm.preprocessing)(torch.zeros(3, 32, 32, dtype=torch.uint8)).shape == (3, 32, 32)


def test_train_batches_pair_each_image_with_its_own_caption():
    dm = _shapes_dm()
    tf = build_eval_transform(dm.preprocessing)
    seen = 0
    for batch in dm.train_dataloader():
        B = len(batch["ids"])
        assert batch["images"].shape == (B, 3, 32, 32) and batch["images"].dtype == torch.float32
        tokens = batch["tokens"]
        assert tokens.dtype == torch.long and tokens.shape[0] == B and tokens.shape[1] <= dm.max_length
        assert torch.equal(batch["caption_index"], torch.arange(B))
        assert (tokens[:, 0] == BOS_ID).all() and ((tokens == EOS_ID).sum(1) == 1).all()
        assert "references" not in batch
        for row, image_id, image, caption_ids in zip(range(B), batch["ids"], batch["images"], tokens, strict=True):
            scene = make_scene(0, int(image_id.split("_")[1]), "train", 32, 1, 2)
            # the caption is one of this image's captions, and the image is this image
            assert dm.tokenizer.decode(caption_ids) in scene.captions, (row, image_id)
            expected = tf(torch.from_numpy(render_scene(scene)).permute(2, 0, 1))
            assert torch.allclose(image, expected)
            eos = int((caption_ids == EOS_ID).nonzero())
            assert (caption_ids[eos + 1 :] == PAD_ID).all()
            seen += 1
    assert seen == 24 * 5  # every (image, caption) pair once per epoch


def test_eval_batches_hold_each_image_once_with_all_references():
    dm = _shapes_dm()
    ids = []
    for batch in dm.val_dataloader():
        B = len(batch["ids"])
        refs = batch["references"]
        assert len(refs) == B and all(len(r) == 5 for r in refs)
        assert batch["tokens"].shape[0] == 5 * B
        assert batch["caption_index"].tolist() == [i for i in range(B) for _ in range(5)]
        decoded = dm.tokenizer.decode_batch(batch["tokens"])
        for m, i in enumerate(batch["caption_index"].tolist()):
            assert decoded[m] == refs[i][m % 5]
        for image_id, r in zip(batch["ids"], refs, strict=True):
            assert r == list(make_scene(0, int(image_id.split("_")[1]), "val", 32, 1, 2).captions)
        ids += batch["ids"]
    assert ids == [f"val_{i:06d}" for i in range(6)]
    predict = next(iter(dm.predict_dataloader()))
    assert predict["ids"][0] == "test_000000" and "tokens" not in predict and len(predict["references"][0]) == 5
    assert sum(len(b["ids"]) for b in dm.test_dataloader()) == 5


def test_augmentation_changes_train_images_only():
    torch.manual_seed(0)
    dm = _shapes_dm(augment=True)
    train = dm.train_dataset()
    a, b = train[0]["image"], train[0]["image"]
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)
    ev = dm.eval_dataset("val")
    assert torch.equal(ev[0]["image"], ev[0]["image"])


def _jsonl_split_data(tmp_path: Path) -> Path:
    lines = []
    for i, (split, caption) in enumerate(
        [("train", "a red dog"), ("train", "a red cat"), ("train", "the dog sleeps"), ("val", "a zebra runs")]
    ):
        Image.new("RGB", (20, 10), (i * 50, 0, 0)).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "captions": [caption, caption + " ."], "split": split}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "data.jsonl"


def test_tokenizer_is_built_from_the_training_split_only(tmp_path):
    path = _jsonl_split_data(tmp_path)
    with pytest.warns(UserWarning, match="no test split"):
        dm = CaptionDataModule(str(path), img_size=16, batch_size=2, augment=False)
        vocab = dm.tokenizer.get_vocab()
    assert "dog" in vocab and "zebra" not in vocab
    batch = next(iter(dm.val_dataloader()))
    assert batch["references"] == [["a zebra runs", "a zebra runs ."]]
    assert UNK_ID in batch["tokens"][0].tolist()
    assert batch["images"].shape == (1, 3, 16, 16)
    assert sum(len(b["ids"]) for b in dm.train_dataloader()) == 6


def test_fixed_tokenizer_and_checkpoint_state(tmp_path):
    path = _jsonl_split_data(tmp_path)
    tok = CaptionTokenizer.train(["a zebra", "a dog"])
    dm = CaptionDataModule(str(path), tokenizer=tok.to_json(), img_size=16)
    assert dm.tokenizer.get_vocab() == tok.get_vocab()  # a fixed vocabulary, not retrained from the data
    state = dm.state_dict()
    other = _shapes_dm()
    other.load_state_dict(state)
    assert other.vocab_size == tok.vocab_size
    with pytest.raises(ValueError, match="tokenizer must be"):
        CaptionDataModule(tokenizer="nonsense")


def test_bpe_tokenizer_option():
    dm = _shapes_dm(tokenizer="bpe", bpe_vocab_size=300)
    batch = next(iter(dm.val_dataloader()))
    assert dm.vocab_size <= 300
    assert dm.tokenizer.decode_batch(batch["tokens"])[:5] == batch["references"][0]


def test_workers_and_pickling():
    dm = _shapes_dm(num_workers=2)
    loader = dm.train_dataloader()
    assert loader.persistent_workers
    pickle.dumps(loader.dataset)
    pickle.dumps(loader.collate_fn)
    batch = next(iter(loader))
    assert batch["tokens"].shape[0] == 8


@pytest.mark.filterwarnings("ignore:.*no test split")
def test_skip_bad_in_the_datamodule(tmp_path):
    path = _jsonl_split_data(tmp_path)
    with open(path, "a") as f:
        f.write(json.dumps({"image": "gone.png", "caption": "lost", "split": "train"}) + "\n")
    with pytest.raises(ValueError, match=r"data.jsonl:5: 'gone.png': image file not found"):
        CaptionDataModule(str(path)).setup()
    with pytest.warns(UserWarning, match="1 bad manifest entry"):
        dm = CaptionDataModule(str(path), skip_bad=True)
        dm.setup()
    assert len(dm.sources["train"]) == 3


@pytest.mark.skipif(not FLICKR.is_dir(), reason="shared flickr8k-mini data not present")
def test_flickr8k_mini_datamodule():
    with pytest.warns(UserWarning, match="no test split"):
        dm = CaptionDataModule(str(FLICKR), img_size=32, batch_size=4, eval_batch_size=2)
        dm.setup()
    assert [len(dm.sources[s]) for s in ("train", "val", "test")] == [753, 113, 113]
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape == (2, 3, 32, 32) and batch["tokens"].shape[0] == 10
    assert all(len(r) == 5 for r in batch["references"])
    train_words = {w for caps in dm.sources["train"].captions for c in caps for w in dm.tokenizer.normalize(c).split()}
    assert all(dm.tokenizer.token_to_id(w) is not None for w in list(train_words)[:200] if w.isalpha())
