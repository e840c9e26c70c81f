"""Decoding and pre-processing fidelity to PaddleX (cv2), and the Python API."""
from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imgfeat_cli import create_model
from imgfeat_cli.common.errors import ImageDecodeError, ModelError
from imgfeat_cli.imaging.decode import decode_image
from imgfeat_cli.models import preprocess as pp
from imgfeat_cli.models.registry import get_spec

RNG = np.random.default_rng(0)


def _photo(h=61, w=83) -> np.ndarray:
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    return np.clip(base + RNG.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", ["jpeg", "png_rgba", "png_palette", "png_gray", "png16", "bmp", "webp", "tiff",
                                  "exif_rotated", "cmyk_jpeg", "jpeg_trailing_bytes", "jpeg_gray"])
def test_decoding_matches_cv2_imread(tmp_path, kind):
    """PaddleX reads with cv2.imread(IMREAD_COLOR); our pixels must be the same (as RGB)."""
    rgb = _photo()
    path = tmp_path / f"img.{ {'jpeg': 'jpg', 'bmp': 'bmp', 'webp': 'webp', 'tiff': 'tif'}.get(kind, 'png') }"
    if kind == "jpeg":
        Image.fromarray(rgb).save(path, quality=90)
    elif kind == "png_rgba":
        Image.fromarray(np.dstack([rgb, RNG.integers(0, 255, rgb.shape[:2], dtype=np.uint8)])).save(path)
    elif kind == "png_palette":
        Image.fromarray(rgb).quantize(32).save(path)
    elif kind == "png_gray":
        Image.fromarray(rgb[:, :, 0]).save(path)
    elif kind == "png16":
        cv2.imwrite(str(path), (rgb[:, :, 0].astype(np.uint16) * 257 + 3))
    elif kind == "exif_rotated":
        path = tmp_path / "rot.jpg"
        img = Image.fromarray(rgb)
        exif = img.getexif()
        exif[0x0112] = 6  # rotate 90 CW on display
        img.save(path, quality=90, exif=exif.tobytes())
    elif kind == "jpeg_trailing_bytes":  # not ending in EOI: decoded by Pillow, same pixels
        path = tmp_path / "trail.jpg"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        path.write_bytes(buf.getvalue() + b"\x00\x00trailer")
    elif kind == "jpeg_gray":
        path = tmp_path / "gray.jpg"
        Image.fromarray(rgb[:, :, 1]).save(path, quality=90)
    elif kind == "cmyk_jpeg":
        path = tmp_path / "cmyk.jpg"
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    else:
        Image.fromarray(rgb).save(path)
    ours = decode_image(path)
    ref = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    diff = np.abs(ours.astype(int) - ref[:, :, ::-1].astype(int))
    if kind == "cmyk_jpeg":  # libjpeg's and Pillow's CMYK inversion may round differently
        assert diff.max() <= 2
    else:
        assert diff.max() == 0, f"{kind}: max pixel diff {diff.max()}"


def test_decoding_gif_first_frame_and_errors(tmp_path):
    frames = [Image.new("RGB", (10, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    out = decode_image(tmp_path / "a.gif")
    assert out.shape == (8, 10, 3) and tuple(out[0, 0]) == (255, 0, 0)
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="zero-byte file"):
        decode_image(tmp_path / "empty.jpg")
    Image.fromarray(_photo()).save(tmp_path / "t.jpg")
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "t.jpg").read_bytes()[:400])
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(tmp_path / "trunc.jpg")
    (tmp_path / "txt.png").write_text("hello")
    with pytest.raises(ImageDecodeError, match="not a recognised image format"):
        decode_image(tmp_path / "txt.png")


def _paddlex_reference(path: Path, size=(224, 224)) -> np.ndarray:
    """PaddleX's pipeline written out: cv2 read, BGR->RGB, INTER_LINEAR resize, normalise, CHW."""
    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return ((img.astype(np.float32) / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1)


def test_preprocess_matches_paddlex_pipeline(tmp_path):
    path = tmp_path / "p.jpg"
    Image.fromarray(_photo(300, 400)).save(path, quality=92)
    prep = pp.build(get_spec("PP-ShiTuV2_rec").pretrained_cfg().transform_ops)
    ours = prep(decode_image(path))
    np.testing.assert_allclose(ours, _paddlex_reference(path), atol=2e-6)


@pytest.mark.parametrize("name", ["PP-ShiTuV2_rec", "PP-ShiTuV2_rec_CLIP_vit_base"])
def test_fused_preprocess_is_bit_identical(name):
    """``into`` (one pass into a batch row) must give exactly the step-by-step chain's floats."""
    prep = pp.build(get_spec(name).pretrained_cfg().transform_ops)
    assert prep.fused is not None and prep.output_shape == (3, 224, 224)
    out = np.full((3,) + prep.output_shape, np.nan, np.float32)
    for row, img in zip(out, [_photo(300, 170), _photo(224, 224), _photo(31, 500)]):
        prep.into(img, row)
        np.testing.assert_array_equal(row, prep(img))
    generic = pp.build([{"ResizeImage": {"size": 32}}, {"ToCHWImage": None}])
    assert generic.fused is None
    img = _photo()
    row = np.empty((3, 32, 32), np.float32)
    generic.into(img, row)
    np.testing.assert_array_equal(row, generic(img))


def test_preprocess_options_and_errors():
    img = _photo(50, 100)
    short = pp.build([{"ResizeImage": {"resize_short": 20}}, {"NormalizeImage": {"scale": "1.0/255.0"}},
                      {"ToCHWImage": None}])
    assert short(img).shape == (3, 20, 40)
    bicubic = pp.build([{"ResizeImage": {"size": 32, "interpolation": "bicubic"}}, {"ToCHWImage": None}])
    compat = pp.build([{"ResizeImage": {"size": 32, "interpolation": "bicubic"}}, {"ToCHWImage": None}], "paddlex")
    np.testing.assert_array_equal(bicubic(img), cv2.resize(img, (32, 32), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1))
    np.testing.assert_array_equal(compat(img), cv2.resize(img, (32, 32), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1))
    assert pp.parse_scale("1/255") == pytest.approx(1 / 255) and pp.parse_scale(0.5) == 0.5
    with pytest.raises(ModelError, match="unsupported pre-processing op 'CropImage'"):
        pp.build([{"CropImage": {"size": 224}}, {"ToCHWImage": None}])
    with pytest.raises(ModelError, match="not a number or a fraction"):
        pp.parse_scale("__import__('os')")


@pytest.fixture(scope="module")
def fixture_model(model_dir):
    """The project's own seeded PP-ShiTuV2_rec folder: the predict() API needs no ../shared."""
    return create_model(model_dir=model_dir)


def test_predict_inputs_and_results(fixture_model, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rgb = _photo(120, 90)
    Image.fromarray(rgb).save(folder / "b.JPG", quality=95)
    Image.fromarray(_photo(80, 80)).save(folder / "sub" / "a.png")
    (folder / "notes.txt").write_text("ignored")
    results = list(fixture_model.predict(str(folder), batch_size=2))
    assert [Path(r["res"]["input_path"]).name for r in results] == ["b.JPG", "a.png"]  # sorted, case-insensitive
    feat = results[0]["res"]["feature"]
    assert feat.shape == (512,) and feat.dtype == np.float32
    assert np.linalg.norm(feat) == pytest.approx(1.0, abs=1e-5)
    # an ndarray is BGR, like PaddleX; same pixels -> same vector
    bgr = decode_image(folder / "b.JPG")[:, :, ::-1].copy()
    from_array = list(fixture_model.predict(bgr))[0]
    assert from_array["res"]["input_path"] is None
    np.testing.assert_allclose(from_array["res"]["feature"], feat, atol=1e-6)
    mixed = list(fixture_model.predict([{"img": str(folder / "b.JPG")}, bgr], batch_size=1))
    np.testing.assert_allclose(mixed[0]["res"]["feature"], mixed[1]["res"]["feature"], atol=1e-6)
    doc = results[0].json
    assert doc["res"]["page_index"] is None and len(doc["res"]["feature"]) == 512
    saved = Path(results[0].save_to_json(str(tmp_path / "out")))
    assert saved.name == "b_res.json" and json.loads(saved.read_text())["input_path"].endswith("b.JPG")
    explicit = Path(results[1].save_to_json(str(tmp_path / "one.json")))
    assert json.loads(explicit.read_text())["feature"] == pytest.approx(results[1].json["res"]["feature"])


def test_predict_print(fixture_model, tmp_path, capsys):
    Image.fromarray(_photo()).save(tmp_path / "x.jpg")
    next(fixture_model.predict(str(tmp_path / "x.jpg"))).print(indent=2)
    doc = json.loads(capsys.readouterr().out)
    assert doc["res"]["input_path"].endswith("x.jpg")


def test_predict_bad_inputs(fixture_model, tmp_path):
    from imgfeat_cli.common.errors import UsageError
    with pytest.raises(UsageError, match="does not exist"):
        list(fixture_model.predict(str(tmp_path / "missing.jpg")))
    with pytest.raises(UsageError, match="needs an 'img' key"):
        list(fixture_model.predict({"image": "x"}))
    with pytest.raises(ImageDecodeError, match="expected uint8 BGR"):
        list(fixture_model.predict(np.zeros((4, 4, 3), np.float32)))
