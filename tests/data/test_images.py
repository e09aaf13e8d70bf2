import io
import pickle
import warnings

import numpy as np
import pytest
from PIL import Image

from vitcap.data.images import ImageLoadError, load_image


def _png(path, size=(16, 12), color=(10, 200, 30)):
    Image.new("RGB", size, color).save(path)
    return path


def _assert_error(path, match, **kwargs):
    with pytest.raises(ImageLoadError, match=match) as info:
        load_image(path, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err) and "\n" not in str(err)
    return err


def test_rgb_png_loads(tmp_path):
    img = load_image(_png(tmp_path / "a.png"))
    assert img.mode == "RGB" and img.size == (16, 12) and img.getpixel((0, 0)) == (10, 200, 30)


def test_missing_zero_byte_and_non_image(tmp_path):
    _assert_error(tmp_path / "nope.png", "file not found")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_error(tmp_path / "empty.jpg", r"empty file \(0 bytes\)")
    (tmp_path / "notes.png").write_text("this is not an image\n")
    _assert_error(tmp_path / "notes.png", "not a recognised image format")
    _assert_error(tmp_path, "is a directory")


def test_truncated_and_corrupt(tmp_path):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    data = buf.getvalue()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    _assert_error(tmp_path / "trunc.png", "truncated or corrupt")
    buf = io.BytesIO()
    noise.save(buf, format="JPEG")
    jpg = buf.getvalue()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    _assert_error(tmp_path / "trunc.jpg", "truncated or corrupt")
    corrupt = bytearray(data)
    start = corrupt.index(b"IDAT") + 8
    corrupt[start : start + 200] = bytes(200)  # zeroed compressed data
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    _assert_error(tmp_path / "corrupt.png", "truncated or corrupt")


def test_decompression_bomb_limit(tmp_path, monkeypatch):
    path = _png(tmp_path / "big.png", size=(100, 100))
    _assert_error(path, "exceeds the limit 5000", max_pixels=5000)
    assert load_image(path, max_pixels=10_000).size == (100, 100)
    filters = list(warnings.filters)
    # Pillow's own global limit: errors above 2x, warns between 1x and 2x; both become ImageLoadError.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)
    _assert_error(path, "decompression bomb|exceeds the limit")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 7000)
    _assert_error(path, "decompression bomb|exceeds the limit")
    assert warnings.filters == filters  # no global change to warning filters


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 256, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = np.asarray(load_image(tmp_path / "deep.png"))
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_float_and_one_bit_modes(tmp_path):
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "f.tif")
    assert np.asarray(load_image(tmp_path / "f.tif"))[0, :, 1].tolist() == [0, 128, 255]
    bw = Image.new("1", (2, 1))
    bw.putpixel((1, 0), 1)
    bw.save(tmp_path / "bw.png")
    assert np.asarray(load_image(tmp_path / "bw.png"))[0].tolist() == [[0, 0, 0], [255, 255, 255]]


def test_cmyk(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    img = load_image(tmp_path / "cmyk.tif")
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (255, 0, 0)


def test_grey_la_and_rgba_composite_over_white(tmp_path):
    Image.new("L", (3, 3), 77).save(tmp_path / "grey.png")
    assert load_image(tmp_path / "grey.png").getpixel((1, 1)) == (77, 77, 77)
    la = Image.new("LA", (3, 1))
    la.putpixel((0, 0), (0, 0))  # fully transparent black -> white
    la.putpixel((1, 0), (0, 255))  # opaque black
    la.putpixel((2, 0), (0, 128))  # half transparent black -> mid grey
    la.save(tmp_path / "la.png")
    row = np.asarray(load_image(tmp_path / "la.png"))[0, :, 0].tolist()
    assert row[0] == 255 and row[1] == 0 and 120 <= row[2] <= 135
    Image.new("RGBA", (2, 2), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "plain.png")
    assert np.asarray(load_image(tmp_path / "plain.png"))[0].tolist() == [[255, 0, 0], [0, 0, 255]]
    p.info["transparency"] = 1
    p.save(tmp_path / "pal.png", transparency=1)
    assert Image.open(tmp_path / "pal.png").mode == "P"
    assert np.asarray(load_image(tmp_path / "pal.png"))[0].tolist() == [[255, 0, 0], [255, 255, 255]]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rot.jpg").size == (40, 20)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_error_pickles_across_workers(tmp_path):
    err = _assert_error(tmp_path / "gone.png", "file not found")
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == err.path
