import pytest
import torch
from torch import nn
from torch.testing import assert_close

from vitcap.models import (
    PRESETS,
    Captioner,
    Classifier,
    DecoderConfig,
    EncoderConfig,
    TextDecoder,
    ViTEncoder,
    create_captioner,
    create_classifier,
)

V = 30


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _toy() -> Captioner:
    return create_captioner("toy", vocab_size=V).eval()


def test_captioner_shapes() -> None:
    model = _toy()
    images, tokens = torch.randn(2, 3, 32, 32), torch.randint(0, V, (2, 9))
    memory = model.encode(images)
    assert memory.shape == (2, 1 + 16, 32)
    assert isinstance(model.proj, nn.Identity)
    logits = model(images, tokens)
    assert logits.shape == (2, 9, V)
    assert_close(logits, model.forward_memory(memory, tokens))


def test_captioner_projects_when_widths_differ() -> None:
    encoder = ViTEncoder("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=2)
    model = Captioner(encoder, TextDecoder(V, embed_dim=32, depth=1, num_heads=2)).eval()
    assert isinstance(model.proj, nn.Linear) and model.proj.in_features == 48 and model.proj.out_features == 32
    assert model(torch.randn(2, 3, 32, 32), torch.randint(0, V, (2, 4))).shape == (2, 4, V)


def test_forward_memory_with_caption_index_equals_repeated_images() -> None:
    # Three captions of image 1 and one of image 0, as an evaluation batch with M = 4 captions of B = 2 images.
    model = _toy()
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.randint(0, V, (4, 6))
    caption_index = torch.tensor([1, 0, 1, 1])
    logits = model.forward_memory(model.encode(images), tokens, caption_index)
    assert_close(logits, model(images[caption_index], tokens), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits, model.forward_memory(model.encode(images), tokens, torch.tensor([0, 1, 0, 0])))


def test_classifier_pools_class_token_or_mean() -> None:
    classifier = create_classifier("toy", num_classes=5).eval()
    images = torch.randn(2, 3, 32, 32)
    logits = classifier(images)
    tokens = classifier.forward_features(images)
    assert logits.shape == (2, 5)
    assert_close(logits, classifier.head(tokens[:, 0]))
    mean = create_classifier("toy", num_classes=5, pool="mean").eval()
    assert_close(mean(images), mean.head(mean.forward_features(images)[:, 1:].mean(1)))
    # A CNN has no class token, so "token" falls back to the mean over its grid.
    cnn = create_classifier("cnn-tiny", num_classes=3, encoder={"embed_dim": 32}).eval()
    cnn_images = torch.randn(2, 3, 64, 64)
    assert cnn.pool == "mean"
    assert_close(cnn(cnn_images), cnn.head(cnn.forward_features(cnn_images).mean(1)))
    with pytest.raises(ValueError, match="pool"):
        Classifier(classifier.encoder, 5, pool="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", ["toy", "tiny", "cnn-tiny"])
def test_small_presets_build_and_run(preset: str) -> None:
    model = create_captioner(preset, vocab_size=V).eval()
    size = PRESETS[preset].encoder.img_size
    logits = model(torch.randn(1, 3, size, size), torch.randint(0, V, (1, 5)))
    assert logits.shape == (1, 5, V)
    assert model.decoder.embed_dim == PRESETS[preset].decoder.embed_dim


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_a_valid_config(preset: str) -> None:
    # On the meta device: checks each preset's settings without allocating the large ones.
    with torch.device("meta"):
        model = create_captioner(preset, vocab_size=V)
        classifier = create_classifier(preset, num_classes=4)
    assert model.decoder.memory_dim == PRESETS[preset].decoder.embed_dim
    assert classifier.head.in_features == classifier.encoder.embed_dim


def test_overrides_and_unknown_names() -> None:
    model = create_captioner("toy", vocab_size=V, decoder={"depth": 1, "cross_attn": "linear"}, pad_id=3)
    assert len(model.decoder.blocks) == 1 and model.decoder.pad_id == 3
    whole = DecoderConfig(embed_dim=16, depth=1, num_heads=2)
    assert create_captioner("toy", vocab_size=V, decoder=whole).decoder.embed_dim == 16
    cnn = create_captioner(
        vocab_size=V,
        encoder=EncoderConfig(kind="cnn", model_name="resnet18", out_index=2),
        decoder={"embed_dim": 32, "depth": 1, "num_heads": 2},
    )
    assert cnn.encoder.embed_dim == 32 and isinstance(cnn.proj, nn.Identity)
    with pytest.raises(ValueError, match="toy"):
        create_captioner("huge", vocab_size=V)
    with pytest.raises(ValueError, match="layers"):
        create_captioner("toy", vocab_size=V, decoder={"layers": 3})
    with pytest.raises(ValueError, match="ViT-only"):
        create_classifier("cnn-tiny", num_classes=2, encoder={"depth": 3})
