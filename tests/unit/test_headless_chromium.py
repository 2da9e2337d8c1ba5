"""scripts/headless_chromium.py: the one way the tests, the lab and the benchmarks start Debian's Chromium."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scripts import headless_chromium
from tests.helpers import REPO


def test_it_loads_with_the_standard_library_only_from_a_file_run_as_a_script(tmp_path):
    """As scripts/lab_push.py and the benchmarks load it: the repo root put first, Playwright not imported."""
    script = tmp_path / "probe.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        "from scripts import headless_chromium\n"
        "assert 'playwright' not in sys.modules\n"
        "print(headless_chromium.CHROMIUM)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", str(script)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == headless_chromium.CHROMIUM


def test_webgpu_keeps_every_flag_but_the_gpu_one():
    assert "--disable-gpu" in headless_chromium.ARGS
    assert "--disable-gpu" not in headless_chromium.WEBGPU_ARGS
    assert set(headless_chromium.ARGS) - {"--disable-gpu"} <= set(headless_chromium.WEBGPU_ARGS)


@pytest.mark.skipif(not headless_chromium.available(), reason="needs Debian's chromium")
def test_extra_flags_reach_chromium_and_it_is_closed_on_the_way_out():
    pytest.importorskip("playwright")
    with headless_chromium.browser("--user-agent=probe/1 HeadlessChrome") as browser:
        page = browser.new_page()
        page.goto("data:text/html,<title>t</title>")
        assert page.evaluate("navigator.userAgent") == "probe/1 HeadlessChrome"
    assert not browser.is_connected()
