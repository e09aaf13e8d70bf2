from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed
from torch.testing import assert_close

from vitcap.models import CNNEncoder, ViTEncoder, build_encoder

VIT = {"model_name": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_vit_tokens_equal_timm_forward_features() -> None:
    reference = timm.create_model(**VIT, img_size=32, num_classes=0).eval()
    encoder = ViTEncoder(**VIT, img_size=32).eval()
    encoder.model.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 32, 32)
    tokens = encoder.forward_features(images)
    assert tokens.shape == (2, 1 + 16, 32)
    assert torch.equal(tokens, reference.forward_features(images))
    assert (encoder.embed_dim, encoder.num_prefix_tokens, encoder.grid_size) == (32, 1, (4, 4))


@pytest.mark.parametrize(("img_size", "grid"), [(32, 4), (48, 6)])
def test_vit_new_img_size(img_size: int, grid: int) -> None:
    encoder = ViTEncoder(**VIT, img_size=img_size, in_chans=1).eval()
    tokens = encoder(torch.randn(2, 1, img_size, img_size))
    assert tokens.shape == (2, 1 + grid * grid, 32)
    assert encoder.grid_size == (grid, grid)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vit_checkpoint_at_other_img_size_resamples_pos_embed(tmp_path: Path, suffix: str) -> None:
    # Saved by timm at 32 px with a 10-class head; loaded headless at 48 px.
    source = timm.create_model(**VIT, img_size=32, num_classes=10)
    path = tmp_path / f"vit{suffix}"
    state = source.state_dict()
    if suffix == ".pth":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, path)
    encoder = ViTEncoder(**VIT, img_size=48, checkpoint_path=str(path))
    expected = resample_abs_pos_embed(state["pos_embed"], new_size=[6, 6], num_prefix_tokens=1)
    assert encoder.model.pos_embed.shape == (1, 1 + 36, 32)
    assert_close(encoder.model.pos_embed.data, expected)
    assert torch.equal(encoder.model.pos_embed.data[:, 0], state["pos_embed"][:, 0])  # class token kept as is
    assert torch.equal(encoder.model.blocks[1].attn.qkv.weight, state["blocks.1.attn.qkv.weight"])


def test_vit_encoder_state_dict_reloads(tmp_path: Path) -> None:
    encoder = ViTEncoder(**VIT, img_size=32)
    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)  # keys carry the wrapper's "model." prefix
    reloaded = ViTEncoder(**VIT, img_size=32, checkpoint_path=str(path))
    assert torch.equal(reloaded.model.cls_token, encoder.model.cls_token)


def test_vit_errors_name_model_and_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vit_nonexistent"):
        ViTEncoder("vit_nonexistent")
    missing = tmp_path / "missing.pth"
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ViTEncoder(**VIT, img_size=32, checkpoint_path=str(missing))
    wider = tmp_path / "wider.pth"
    torch.save(timm.create_model(**(VIT | {"embed_dim": 64}), img_size=32).state_dict(), wider)
    with pytest.raises(ValueError, match="wider.pth"):
        ViTEncoder(**VIT, img_size=32, checkpoint_path=str(wider))
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        ViTEncoder(**VIT, img_size=32, checkpoint_path=str(garbage))
    with pytest.raises(ValueError, match="not a vision transformer"):
        ViTEncoder("resnet18")


@pytest.mark.parametrize("source", ["timm", "torchvision"])
@pytest.mark.parametrize(("out_index", "grid"), [(-1, 2), (3, 4)])
def test_cnn_encoder_tokens(source: str, out_index: int, grid: int) -> None:
    encoder = CNNEncoder("resnet18", embed_dim=32, source=source, out_index=out_index, img_size=64).eval()
    assert encoder.grid_size == (grid, grid)
    tokens = encoder(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, grid * grid, 32)
    assert encoder.num_prefix_tokens == 0
    # Positions are computed per batch, so another image size just gives another grid.
    assert encoder(torch.randn(1, 3, 96, 64)).shape == (1, (grid * 3 // 2) * grid, 32)
    assert encoder.grid_size == (grid * 3 // 2, grid)


def test_cnn_encoder_feature_map_is_the_chosen_stage() -> None:
    encoder = CNNEncoder("resnet18", embed_dim=32, out_index=3).eval()
    reference = timm.create_model("resnet18", features_only=True, out_indices=(3,)).eval()
    reference.load_state_dict(encoder.model.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    feat = reference(images)[0]
    assert feat.shape == (2, 256, 4, 4)
    assert torch.equal(encoder._feature_map(images), feat)
    assert encoder.reduction == 16


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_cnn_checkpoint_with_classifier_loads(tmp_path: Path, source: str) -> None:
    if source == "timm":
        net = timm.create_model("resnet18", num_classes=7)
    else:
        net = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "cnn.pth"
    torch.save(net.state_dict(), path)
    encoder = CNNEncoder("resnet18", embed_dim=32, source=source, checkpoint_path=str(path))
    assert torch.equal(encoder.model.layer4[1].conv2.weight, net.layer4[1].conv2.weight)


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_cnn_other_in_chans(source: str) -> None:
    encoder = CNNEncoder("resnet18", embed_dim=32, source=source, in_chans=1)
    assert encoder(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32)


def test_build_encoder_and_errors() -> None:
    assert isinstance(build_encoder("vit", **VIT, img_size=32), ViTEncoder)
    assert isinstance(build_encoder("cnn", model_name="resnet18", embed_dim=32), CNNEncoder)
    with pytest.raises(ValueError, match="kind"):
        build_encoder("rnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a ResNet"):
        CNNEncoder("squeezenet1_0", source="torchvision")
    with pytest.raises(ValueError, match="resnet_nonexistent"):
        CNNEncoder("resnet_nonexistent", source="torchvision")
    with pytest.raises(ValueError, match="out_index=7"):
        CNNEncoder("resnet18", out_index=7)
    with pytest.raises(ValueError, match="divisible by 4"):
        CNNEncoder("resnet18", embed_dim=30)


def test_conv_stem_gives_the_patch_grid_and_trains() -> None:
    from vitcap.models.encoders import ViTEncoder

    patch = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    conv = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="conv")
    x = torch.randn(2, 3, 32, 32)
    assert conv(x).shape == patch(x).shape == (2, 1 + 16, 32)
    assert isinstance(conv.model.patch_embed.proj, torch.nn.Sequential)
    strides = [m.stride[0] for m in conv.model.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1]  # three stride-2 3x3 convs reach the 8-px grid, then the 1x1 projection
    conv(x).sum().backward()
    assert conv.model.patch_embed.proj[0].weight.grad is not None


def test_conv_stem_rejects_odd_patch_sizes() -> None:
    from vitcap.models.encoders import ViTEncoder

    with pytest.raises(ValueError, match="power-of-two"):
        ViTEncoder(img_size=36, patch_size=6, embed_dim=32, depth=1, num_heads=2, stem="conv")


def test_deeper_conv_stem_adds_stride_1_convs() -> None:
    enc = ViTEncoder(
        img_size=28, patch_size=4, embed_dim=32, depth=1, num_heads=2, in_chans=1, stem="conv", stem_depth=2
    )
    convs = [m for m in enc.model.patch_embed.proj if isinstance(m, torch.nn.Conv2d)]
    # (in, out, stride): a stride-1 conv on the 28-px image, then per stage a halving and a stride-1 conv, then 1x1.
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (1, 8, 1),
        (8, 16, 2),
        (16, 16, 1),
        (16, 32, 2),
        (32, 32, 1),
        (32, 32, 1),
    ]
    assert [c.kernel_size[0] for c in convs] == [3, 3, 3, 3, 3, 1]
    x = torch.randn(2, 1, 28, 28)
    assert enc(x).shape == (2, 1 + 49, 32)
    with pytest.raises(ValueError, match="stem_depth"):
        ViTEncoder(img_size=28, patch_size=4, embed_dim=32, depth=1, num_heads=2, stem="conv", stem_depth=0)
    with pytest.raises(ValueError, match="needs stem='conv'"):
        ViTEncoder(img_size=28, patch_size=4, embed_dim=32, depth=1, num_heads=2, stem_depth=2)


def test_conv_stem_runs_channels_last_with_the_same_tokens() -> None:
    enc = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="conv").eval()
    assert enc.model.patch_embed.proj[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    tokens = enc(x)
    enc.model.patch_embed.proj.to(memory_format=torch.contiguous_format)
    assert_close(tokens, enc.model.forward_features(x), atol=1e-5, rtol=1e-5)
    # Checkpoints do not record the layout: a contiguous model loads a channels-last one's state dict exactly.
    plain = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, stem="conv").eval()
    plain.load_state_dict(enc.state_dict())
    assert_close(plain(x), tokens, atol=1e-5, rtol=1e-5)


def test_sincos_positions_are_fixed_and_kept_in_checkpoints() -> None:
    from vitcap.layers.pos_embed import build_2d_sincos
    from vitcap.models.registry import EncoderConfig

    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "pos_embed": "sincos"}
    enc = ViTEncoder(**kw)
    fixed = enc.model.pos_embed.clone()
    assert fixed.shape == (1, 1 + 16, 32)
    assert_close(fixed[0, 1:], build_2d_sincos(4, 4, 32))  # the 4 x 4 grid, row-major
    assert (fixed[0, 0] == 0).all()  # the class token gets no position
    assert not any("pos_embed" in name for name, _ in enc.named_parameters())
    # Training never moves them, and they change the tokens (a learned model starts near zero instead).
    opt = torch.optim.AdamW(enc.parameters(), lr=0.1)
    enc(torch.randn(2, 3, 32, 32)).square().mean().backward()
    opt.step()
    assert torch.equal(enc.model.pos_embed, fixed)
    # Same state-dict key as a learned model, so checkpoints and init_from see one layout.
    assert "model.pos_embed" in enc.state_dict()
    again = ViTEncoder(**kw).eval()
    again.load_state_dict(enc.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert_close(again(x), enc.eval()(x))
    with pytest.raises(ValueError, match="pos_embed"):
        ViTEncoder(**{**kw, "pos_embed": "rope"})
    with pytest.raises(ValueError, match="ViT-only"):
        EncoderConfig(kind="cnn", model_name="resnet18", pos_embed="sincos").build()


def test_model_kwargs_reach_the_constructor_and_survive_a_checkpoint_spec() -> None:
    from vitcap.checkpoint import plain
    from vitcap.models.registry import EncoderConfig, ModelSpec

    cfg = EncoderConfig(kind="cnn", model_name="resnet18", img_size=32, embed_dim=32, out_index=1)
    one_block = EncoderConfig(**{**vars(cfg), "model_kwargs": {"layers": [1, 1, 1, 1]}})
    full, small = cfg.build(), one_block.build()
    assert len(full.model.layer1) == 2 and len(small.model.layer1) == 1  # a ResNet-10 trunk
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 8 * 8, 32)
    # The spec a checkpoint stores rebuilds the same architecture (plain containers: weights_only loading).
    spec = ModelSpec("classifier", one_block, num_classes=3)
    again = ModelSpec.from_dict(plain(spec.to_dict()))
    assert again.encoder.model_kwargs == {"layers": [1, 1, 1, 1]}
    model = again.build()
    model.load_state_dict(spec.build().state_dict())  # same keys and shapes
    assert len(model.encoder.model.layer1) == 1
    # ViT: extra timm arguments, here register tokens.
    vit = ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, model_kwargs={"reg_tokens": 2})
    assert vit.num_prefix_tokens == 3 and vit(torch.randn(1, 3, 32, 32)).shape == (1, 3 + 16, 32)
    # What the encoder sets itself cannot be set twice, and unknown arguments name the model.
    with pytest.raises(ValueError, match=r"may not set \['in_chans'\]"):
        CNNEncoder(model_kwargs={"in_chans": 1})
    with pytest.raises(ValueError, match=r"may not set \['depth'\]"):
        ViTEncoder(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, model_kwargs={"depth": 2})
    with pytest.raises(ValueError, match="'resnet18' does not accept"):
        CNNEncoder(model_kwargs={"bogus": 1})
    with pytest.raises(ValueError, match="'resnet18' does not accept"):
        CNNEncoder(source="torchvision", model_kwargs={"bogus": 1})
