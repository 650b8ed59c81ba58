"""The HTML report opened in headless Chromium: every image decodes, and the page renders them.

Needs Debian's `chromium` package (`apt-get install -y chromium`); skipped where it is absent.
"""

import shutil
import subprocess

import keras
import numpy as np
import pytest
from PIL import Image

from tltf.evaluation.metrics import evaluate

pytestmark = pytest.mark.slow

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("needs a headless Chromium (Debian: `apt-get install -y chromium`); absent here")


def _run(browser, tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    cmd = [browser, *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture
def report_page(tmp_path):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    model = keras.Model(inputs, keras.layers.Dense(
        3, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=0))(x))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (24, 16, 16, 3)).astype("float32")
    history = {"loss": [1.0, 0.8, 0.6, 0.5], "val_loss": [1.1, 0.9, 0.7, 0.65],
               "phase": [1, 1, 2, 2]}
    report = evaluate(model, (images, np.arange(24) % 3), class_names=["cat", "dog", "fox"],
                      history=history)
    return report.save(tmp_path / "report")


def test_html_report_images_load_in_chromium(report_page, tmp_path):
    browser = _chromium()
    # A copy of the page with a probe that records how many images decoded.
    probe = report_page.parent / "probe.html"
    script = ("<script>window.addEventListener('load', () => { const all = [...document.images];"
              " document.body.setAttribute('data-loaded', all.filter(i => i.complete &&"
              " i.naturalWidth > 0).length + '/' + all.length); });</script>")
    probe.write_text(report_page.read_text().replace("</body>", script + "</body>"))
    dom = _run(browser, tmp_path, "--virtual-time-budget=10000", "--dump-dom",
               probe.as_uri()).stdout
    assert 'data-loaded="3/3"' in dom, dom[-500:]

    shot = tmp_path / "screenshot.png"
    _run(browser, tmp_path, f"--screenshot={shot}", "--window-size=1100,3000",
         report_page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # The confusion matrix's blue cells are on screen (a broken image shows none).
    blue = (pixels[..., 2] - pixels[..., 0] > 60).sum()
    assert blue > 2000, blue
