"""The documentation site builds in strict mode (broken links, anchors and references fail)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _nav_files(nav):
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            yield from _nav_files(value)
        else:
            yield value


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = set(_nav_files(config["nav"]))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert pages == in_nav, (pages - in_nav, in_nav - pages)


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="needs the docs extra: pip install 'tltf[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="needs mkdocstrings[python]")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    for page in ("index.html", "cli/index.html", "evaluate/index.html", "recipes/index.html"):
        assert (site / page).is_file(), page
    api = (site / "evaluate" / "index.html").read_text()
    assert "tltf.evaluation.metrics.evaluate" in api and "expected_calibration_error" in api
    shutil.rmtree(site)
