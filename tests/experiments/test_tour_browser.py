"""Render a tour's index.html in headless Chromium: every figure loads and every link resolves."""

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kexue.eval.report import render_index
from kexue.experiments.registry import POSTS
from kexue.experiments.runner import run_experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _dump_dom(page: Path, profile: Path) -> str:
    # The flags keep Chromium off the network (it would try Google's hosts) and independent of any user profile.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.body = [], [], {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        elif tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        elif tag == "body":
            self.body = attrs


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed")
def test_index_renders_with_every_figure_and_link(tmp_path):
    assert CHROMIUM, "CI must install chromium (see .ci/run)"
    tour_dir = tmp_path / "tour"
    tour_dir.mkdir()
    result = run_experiment("init-geometry", overrides={"pairs": 2000, "dims": (3, 50)}, out=tour_dir)
    cards = [{"post": p.number, "title": p.title, "url": p.url, "experiment": None, "status": "missing"}
             for p in POSTS]
    cards[4].update(experiment="init-geometry", status="done", run=result.path.name, seconds=result.seconds)
    index = render_index(tour_dir, cards, running=False)

    dom = _Collect()
    dom.feed(_dump_dom(index, tmp_path / "profile"))
    assert dom.body.get("data-checked") == "1", "the page's load handler did not run"
    assert dom.images, "the init-geometry card should show its headline figure"
    assert all(img.get("data-loaded") == "1" for img in dom.images), dom.images

    local = [href for href in dom.links if not re.match(r"https?://", href)]
    assert local, "the card should link to its full report"
    for href in local:
        target = tour_dir / href
        assert target.is_file(), href
        report = _Collect()
        report.feed(_dump_dom(target, tmp_path / "profile"))
        assert report.images and all(i["src"].startswith("data:image/png;base64,") for i in report.images)
        assert all(i.get("data-loaded") == "1" for i in report.images)
    for post in POSTS:
        assert post.url in dom.links
