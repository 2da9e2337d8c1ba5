"""Pictures and DICOM files picked in the component, preprocessed and classified inside the sandbox
(softmax, top-k with labels, a threshold): only the answer returns to Python, and it is what Pillow or
pydicom + numpy + native onnxruntime give for the same file.

Tolerance: the scores are probabilities; the browser computes in float32 where numpy may use float64,
so they agree to 1e-5 (absolute), the logits to 1e-4. The DICOM files are written by pydicom here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from .conftest import EXAMPLES, start_streamlit
from .test_e2e import COMPONENT_FRAME, SANDBOX_FRAME

pydicom = pytest.importorskip("pydicom")

LABELS = ("naevus", "melanoma", "keratosis", "dermatofibroma", "vascular")
MEAN = np.array([0.485, 0.456, 0.406]).reshape(3, 1, 1)
STD = np.array([0.229, 0.224, 0.225]).reshape(3, 1, 1)
# DICOM's identifiers for the transfer syntaxes: explicit VR little endian, and RLE lossless (refused).
EXPLICIT_LE = "1.2.840.10008.1.2.1"
RLE = "1.2.840.10008.1.2.5"
# A patient's name in every file and file name: it must reach nothing the server gets.
NAME = "Doe_Jane_1961-02-03"
PATIENT = "Doe^Jane^1961-02-03"
PIECES = ["Doe", "Jane", "1961-02-03", "1961"]


@pytest.fixture(scope="module")
def classify_url():
    yield from start_streamlit("classify_app.py")


def logits(image: np.ndarray) -> np.ndarray:
    """Native onnxruntime on a 1x3x16x16 float input."""
    session = onnxruntime.InferenceSession(str(EXAMPLES / "static/skin.onnx"))
    return session.run(None, {"image": image.astype(np.float32)[None]})[0][0]


def top3(values: np.ndarray) -> list[tuple[int, str, float]]:
    probabilities = np.exp(values - values.max()) / np.exp(values - values.max()).sum()
    order = np.argsort(-probabilities, kind="stable")[:3]
    return [(int(i), LABELS[i], float(probabilities[i])) for i in order]


def picture() -> np.ndarray:
    """A 16 high, 24 wide RGB picture: its centre 16x16 is what crop="center" keeps."""
    y, x = np.mgrid[0:16, 0:24]
    return np.stack([x * 10, y * 16, np.where(x > 11, 220, 30)], axis=-1).astype(np.uint8)


def dicom(
    path: Path, pixels: np.ndarray, photometric="MONOCHROME2", slope=1.0, intercept=0.0, window=None, implicit=False
):
    """A one-frame DICOM file of these stored values (uint8/uint16/int16), with a patient's name."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = PATIENT, NAME, "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated = ds.BitsStored = pixels.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def hounsfield() -> np.ndarray:
    """16x16 signed stored values: a CT-like ramp from air to bone."""
    y, x = np.mgrid[0:16, 0:16]
    return (x * 140 + y * 9 - 600).astype(np.int16)


def windowed(values: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.clip((values - (center - width / 2)) / width, 0, 1) * 255


def gray_input(pixels: np.ndarray, scale: float = 1 / 255) -> np.ndarray:
    return (np.repeat(pixels[None].astype(np.float64), 3, axis=0) * scale - MEAN) / STD


class Page:
    """The classify app in one browser page: picks files one after another, reads each answer."""

    def __init__(self, page, url: str, query: str = "") -> None:
        self.page = page
        page.goto(f"{url}/{query}")
        self.sandbox = page.frame_locator(COMPONENT_FRAME).first.frame_locator(SANDBOX_FRAME)
        page.get_by_text("Model loaded.").wait_for(timeout=90_000)
        self.last = ""

    def pick(self, path: Path) -> str:
        self.sandbox.locator("#secure-context-file").set_input_files(str(path))
        lines = self.page.locator("text=/^(RESULT|ERROR) /")
        lines.first.wait_for(timeout=60_000)
        self.page.wait_for_function(
            "last => [...document.querySelectorAll('code')].some(c => /^(RESULT|ERROR) /.test(c.innerText)"
            " && c.innerText !== last)",
            arg=self.last,
            timeout=60_000,
        )
        self.last = lines.first.inner_text()
        return self.last

    def result(self, path: Path) -> dict:
        line = self.pick(path)
        assert line.startswith("RESULT "), line
        return json.loads(line.removeprefix("RESULT "))


def assert_classes(got: list[dict], want: list[tuple[int, str, float]]) -> None:
    assert [(c["index"], c["label"]) for c in got] == [(i, label) for i, label, _ in want]
    np.testing.assert_allclose([c["score"] for c in got], [s for *_, s in want], atol=1e-5)


def test_a_png_is_cropped_and_classified_in_the_sandbox_as_natively(page, classify_url, tmp_path):
    path = tmp_path / f"{NAME}.png"
    Image.fromarray(picture(), "RGB").save(path)
    crop = picture()[:, 4:20].transpose(2, 0, 1) / 255
    want = logits((crop - MEAN) / STD)
    app = Page(page, classify_url, "?crop=center&keep=1")
    got = app.result(path)
    assert_classes(got["classes"], top3(want))
    np.testing.assert_allclose(got["logits"], want, atol=1e-4)


def test_only_the_answer_returns_and_the_threshold_drops_the_rest(page, classify_url, tmp_path):
    path = tmp_path / f"{NAME}.png"
    Image.fromarray(picture(), "RGB").save(path)
    crop = picture()[:, 4:20].transpose(2, 0, 1) / 255
    want = top3(logits((crop - MEAN) / STD))
    threshold = (want[0][2] + want[1][2]) / 2  # between the best and the second
    got = Page(page, classify_url, f"?crop=center&threshold={threshold}").result(path)
    assert got["has_outputs"] is False
    assert_classes(got["classes"], want[:1])


def test_dicom_files_are_read_windowed_and_classified_in_the_sandbox(page, classify_url, tmp_path):
    stored = hounsfield()
    app = Page(page, classify_url, "?window=file")
    # Explicit VR, MONOCHROME2, rescaled (HU = 2 * stored - 1024), the file's window.
    hu = stored.astype(np.float64) * 2 - 1024
    path = dicom(tmp_path / f"{NAME}.dcm", stored, slope=2, intercept=-1024, window=(-300, 1500))
    assert_classes(app.result(path)["classes"], top3(logits(gray_input(windowed(hu, -300, 1500)))))
    # Implicit VR, MONOCHROME1 (the lowest value white), unsigned 16-bit.
    unsigned = (stored.astype(np.int32) + 600).astype(np.uint16)
    path = dicom(tmp_path / f"{NAME}-2.dcm", unsigned, "MONOCHROME1", window=(900, 1800), implicit=True)
    want = 255 - windowed(unsigned.astype(np.float64), 900, 1800)
    assert_classes(app.result(path)["classes"], top3(logits(gray_input(want))))


def test_dicom_without_a_window_gives_the_modality_values(page, classify_url, tmp_path):
    stored = hounsfield()
    path = dicom(tmp_path / f"{NAME}.dcm", stored, slope=0.5, intercept=100)
    got = Page(page, classify_url, "?scale=0.001").result(path)
    want = top3(logits(gray_input(stored * 0.5 + 100, scale=0.001)))
    assert_classes(got["classes"], want)


def test_no_dicom_error_carries_the_patient_or_the_file_name(page, classify_url, tmp_path):
    """Each way a DICOM file is refused; the patient's name sits in the file and in its name."""
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.url} {request.post_data or ''}"))
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(repr(payload))))
    app = Page(page, classify_url, "?window=file")
    stored = hounsfield()
    rle = dicom(tmp_path / f"{NAME}-rle.dcm", stored, window=(0, 100))
    rle.write_bytes(rle.read_bytes().replace(EXPLICIT_LE.encode() + b"\0", RLE.encode() + b"\0", 1))
    rgb = dicom(tmp_path / f"{NAME}-rgb.dcm", stored, window=(0, 100))
    ds = pydicom.dcmread(rgb)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    ds.save_as(rgb)
    cases = {
        tmp_path / f"{NAME}-text.dcm": "the picked file could not be parsed as DICOM",
        rle: "the picked DICOM file's transfer syntax is not supported: only uncompressed little endian "
        "(1.2.840.10008.1.2 implicit VR, 1.2.840.10008.1.2.1 explicit VR)",
        rgb: "the picked DICOM file's pixels are not supported: one sample per pixel, MONOCHROME1 or "
        "MONOCHROME2, 8 or 16 bits",
        dicom(tmp_path / f"{NAME}-nowindow.dcm", stored): "the picked DICOM file has no window centre and width",
    }
    (tmp_path / f"{NAME}-text.dcm").write_text(f"{PATIENT}\n" * 40)
    for path, message in cases.items():
        assert app.pick(path) == f"ERROR file: {message}"
    assert any("ERROR" not in s for s in sent), "nothing was sent: the test would prove nothing"
    for piece in PIECES:
        assert not [s for s in sent if piece in s], piece
        assert piece not in page.locator("body").inner_text(), piece
