"""A PNG and a JPEG picked in the component, decoded and preprocessed inside the sandbox's worker
(createImageBitmap + OffscreenCanvas, ImagePreprocess), give what Pillow + numpy + native onnxruntime
give for the same file."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from .conftest import EXAMPLES, start_streamlit
from .test_e2e import COMPONENT_FRAME, SANDBOX_FRAME

MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)


@pytest.fixture(scope="module")
def image_url():
    yield from start_streamlit("image_app.py")


def picture() -> Image.Image:
    """A 16x16 RGB picture with smooth gradients and a sharp edge (JPEG's hard case)."""
    y, x = np.mgrid[0:16, 0:16]
    rgb = np.stack([x * 16, y * 16, np.where(x > 7, 220, 30)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def native(path) -> np.ndarray:
    pixels = np.asarray(Image.open(path).convert("RGB"), np.float32).transpose(2, 0, 1)
    tensor = ((pixels / 255 - MEAN) / STD)[None].astype(np.float32)
    session = onnxruntime.InferenceSession(str(EXAMPLES / "static/conv.onnx"))
    return session.run(None, {"image": tensor})[0]


def scored(page, url, path) -> np.ndarray:
    page.goto(url)
    sandbox = page.frame_locator(COMPONENT_FRAME).first.frame_locator(SANDBOX_FRAME)
    picker = sandbox.locator("#secure-context-file")
    picker.wait_for(timeout=90_000)
    page.get_by_text("Model loaded.").wait_for(timeout=90_000)
    picker.set_input_files(str(path))
    line = page.locator("text=/^(RESULT|ERROR) /").inner_text(timeout=60_000)
    assert line.startswith("RESULT "), line
    got = json.loads(line.removeprefix("RESULT "))
    assert got["dims"] == [1, 2, 14, 14]
    return np.array(got["data"], np.float32).reshape(got["dims"])


def test_a_png_is_decoded_in_the_sandbox_exactly_as_pillow_does(page, image_url, tmp_path):
    path = tmp_path / "scan.png"
    picture().save(path)
    # Lossless: the same pixels, so only float rounding differs.
    np.testing.assert_allclose(scored(page, image_url, path), native(path), rtol=1e-5, atol=1e-4)


def test_a_jpeg_is_decoded_in_the_sandbox_within_a_pixel_level_of_pillow(page, image_url, tmp_path):
    path = tmp_path / "photo.jpg"
    picture().save(path, quality=90)
    got, want = scored(page, image_url, path), native(path)
    # Chromium's and Pillow's JPEG decoders may differ by a level or two per pixel: a 3x3x3 kernel
    # over normalised values turns 2 levels into at most 27 * 2/255/0.224 * max|w| in the output.
    kernel = onnx_kernel()
    bound = 27 * (2 / 255 / 0.224) * np.abs(kernel).max()
    assert np.abs(got - want).max() <= bound


def test_a_file_that_is_not_an_image_is_a_fixed_error(page, image_url, tmp_path):
    path = tmp_path / "Doe_Jane_scan.png"
    path.write_text("Doe^Jane^1961-02-03")
    page.goto(image_url)
    sandbox = page.frame_locator(COMPONENT_FRAME).first.frame_locator(SANDBOX_FRAME)
    page.get_by_text("Model loaded.").wait_for(timeout=90_000)
    sandbox.locator("#secure-context-file").set_input_files(str(path))
    line = page.locator("text=/^(RESULT|ERROR) /").inner_text(timeout=60_000)
    assert line == "ERROR file: the picked file could not be decoded as an image"


def onnx_kernel() -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(EXAMPLES / "static/conv.onnx"))
    return numpy_helper.to_array(model.graph.initializer[0])
