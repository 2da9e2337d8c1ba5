"""No error that reaches Python carries a picked file's name or content.

A clinic's file names and first values are often a patient's (``Doe_Jane_1961-02-03_labs.csv``, a
first cell ``Doe^Jane^1961-02-03``). Every way a picked file can be refused or fail is driven here with
such a marker in the file's name and content; the marker must appear in nothing the browser sends to
the server (websocket frames and requests) and nowhere in the app's page (what Python was told).
"""

from __future__ import annotations

import pytest

from .test_e2e import open_loaded

NAME = "Doe_Jane_1961-02-03_labs"
CONTENT = "Doe^Jane^1961-02-03"
# Pieces of either marker: none may leave the sandbox, in any form.
PIECES = ["Doe", "Jane", "1961-02-03", "1961"]


@pytest.mark.parametrize(
    ("query", "file_name", "content", "expected"),
    [
        (
            "",
            f"{NAME}.csv",
            f"{CONTENT},1.0\n" * 80,
            "(file): file: the picked file is 1920 bytes; the limit is 1000 bytes",
        ),
        (
            "",
            f"{NAME}.exe",
            "1,2,3,4",
            "(file): file: the picked file's name does not end in one of the accepted types",
        ),
        ("", f"{NAME}.csv", f"{CONTENT},1,2,3", "(input): input: value 1 is not a number"),
        ("", f"{NAME}.csv", f"1,2,3,{CONTENT}", "(input): input: value 4 is not a number"),
        ("", f"{NAME}.csv", "1,2,3,4,5", "(input): input: 5 values do not fit shape [1, 4]"),
        ("?dtype=uint8", f"{NAME}.csv", "300,1,2,3", "(input): input: value 1 is not a uint8 value"),
        # The runtime refuses the tensor (the model takes float32): its own message stays in the sandbox.
        (
            "?dtype=int32",
            f"{NAME}.csv",
            "1,2,3,4",
            "(input): input: the model refused the picked file's values as a int32 tensor of shape [1, 4]",
        ),
    ],
)
def test_no_error_about_a_picked_file_carries_its_name_or_content(
    page, app_url, tmp_path, query, file_name, content, expected
):
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.url} {request.post_data or ''}"))
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(repr(payload))))
    _, sandbox = open_loaded(page, app_url, query)
    path = tmp_path / file_name
    path.write_text(content)
    sandbox.locator("#secure-context-file").set_input_files(str(path))
    shown = page.locator("text=Inference failed").inner_text(timeout=30_000)
    assert shown.startswith(f"Inference failed {expected}"), shown
    # The error reached Python (it is on the page); the marker reached nothing the server got.
    assert any("Inference failed" not in s for s in sent), "nothing was sent: the test would prove nothing"
    for piece in PIECES:
        assert not [s for s in sent if piece in s], piece
        # The app's page: what Python rendered from the error (the sandbox's own status line aside).
        assert piece not in page.locator("body").inner_text(), piece
