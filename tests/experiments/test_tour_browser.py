"""Render a tour's index.html and a run's report.html in headless Chromium, at a laptop's and a phone's width.

The runs are synthetic (summary, report blocks and figures written through the real :class:`Run` handle, nothing
trained), so the test takes seconds. Chromium's own layout answers the questions: a small script, added to a copy of
each page, measures it once it has loaded (after the page's own image check) and posts the result to a host page,
which writes it into a ``data-`` attribute read back with ``--dump-dom``. The host shows the copy in an iframe of
the wanted width, because headless Chromium will not make its window narrower than 500 px. Screenshots of every page
at both widths are left in the test's temporary folder.
"""

import html
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kexue.eval.plots import subplots
from kexue.eval.report import render_index, render_report
from kexue.experiments.registry import POSTS
from kexue.experiments.rundir import Run, collect_env, create_run_dir, run_label, write_json, write_status
from kexue.experiments.tour import CLAIMS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
WIDTHS = (1280, 390)  # a laptop, a phone

# Appended to a copy of a page: on load, what Chromium laid out, as JSON posted to the host page.
_MEASURE = """<script>window.addEventListener('load',()=>{const d=document.documentElement;
const q=s=>[...document.querySelectorAll(s)];
const box=e=>({w:e.getBoundingClientRect().width,sw:e.scrollWidth,cw:e.clientWidth});
const text=(e,s)=>{const x=e.querySelector(s);return x?x.textContent:null;};
parent.postMessage(JSON.stringify({vw:d.clientWidth,page:d.scrollWidth,body:document.body.scrollWidth,
height:d.scrollHeight,checked:document.body.dataset.checked||null,links:q('a[href]').map(a=>a.getAttribute('href')),
cards:q('.card').map(c=>({status:c.dataset.status,name:c.dataset.experiment,...box(c),value:text(c,'.hl-value'),
mark:text(c,'.headline .mark'),since:text(c,'[data-since]')})),
images:q('img').map(i=>({w:i.getBoundingClientRect().width,room:i.parentElement.clientWidth,
loaded:i.dataset.loaded||null,src:i.getAttribute('src').slice(0,22)})),
wraps:q('.table-wrap').map(box)}),'*');});</script>"""

_HOST = """<!doctype html><html><body style="margin:0">
<iframe src="{src}" style="border:0;width:{width}px;height:900px"></iframe>
<script>addEventListener('message',e=>{{document.body.dataset.layout=e.data;}});</script></body></html>"""


def _chromium(page: Path, profile: Path, width: int, height: int, *extra: str) -> str:
    # The flags keep Chromium off the network (it would try Google's hosts) and independent of any user profile.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--force-device-scale-factor=1", f"--window-size={width},{height}", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", *extra, page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _render(page: Path, profile: Path, width: int, shots: Path) -> dict:
    """What Chromium laid out for ``page`` at ``width`` px, once its load handlers ran, and a full-page screenshot
    ``shots/<folder>-<page>-<width>.png``."""
    probe = page.with_name(f"{page.stem}-measure.html")  # beside the page, so relative links still resolve
    probe.write_text(page.read_text().replace("</body>", _MEASURE + "</body>"))
    host = page.with_name(f"{page.stem}-host.html")
    host.write_text(_HOST.format(src=probe.name, width=width))
    found = re.search(r'<body[^>]*\sdata-layout="([^"]*)"', _chromium(host, profile, max(width, 500), 1000,
                                                                      "--dump-dom"))
    assert found, f"{page.name}: the measuring script did not report"
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["checked"] == "1", f"{page.name}: the page's load handler did not run"
    assert width - 20 < layout["vw"] <= width, layout["vw"]  # the viewport, less a scroll bar
    shot = shots / f"{page.parent.name}-{page.stem}-{width}.png"  # --screenshot does lay out at 390 px
    _chromium(probe, profile, width, min(layout["height"] + 20, 12000), "--hide-scrollbars", f"--screenshot={shot}")
    assert shot.stat().st_size > 0
    probe.unlink()
    host.unlink()
    return layout


def _fake_run(tour_dir: Path, name: str, metrics: list[tuple], *, error: str | None = None,
              wide_table: bool = False) -> dict:
    """A run folder of ``name`` as the runner leaves it, with made-up numbers; returns its tour card fields."""
    import numpy as np

    path = create_run_dir(tour_dir, run_label(name, None, 0))
    (path / "figures").mkdir()
    write_json(path / "config.json", {"experiment": name, "seed": 0, "device": "cpu", "steps": 200,
                                      "widths": [64, 128, 256, 512, 1024, 2048, 4096, 8192]})
    write_json(path / "env.json", collect_env("cpu"))
    run = Run(path, "cpu", 0)
    run.section("Claim")
    run.text(CLAIMS[name].text)
    for metric_name, value, kwargs in metrics:
        run.summary(metric_name, value, **kwargs)
    rng = np.random.default_rng(len(name))
    # A wide, three-panel figure, as most experiments draw: about 1,500 px at the report's dpi, wider than a phone.
    fig, axes = subplots(1, 3, width=4.7, height=3.6)
    for i, ax in enumerate(axes[0]):
        x = rng.normal(size=(400, 2)) * (i + 1)
        ax.scatter(x[:, 0], x[:, 1], s=4)
        ax.set_title(f"panel {i}")
    run.figure(fig, "overview", "Three panels of synthetic points.", headline=True)
    if wide_table:
        header = ["model"] + [f"metric_with_a_long_name_{j}" for j in range(8)] + ["note"]
        rows = [[f"variant-{i}"] + [float(v) for v in rng.normal(size=8)]
                + ["a note long enough to wrap over several lines in a narrow column, as real notes do"]
                for i in range(4)]
        run.table(header, rows, caption="A table wider than a phone's screen.")
    if error:
        (path / "error.txt").write_text(f"Traceback (most recent call last):\n{error}\n")
    status = {"status": "failed", "seconds": 3.5, "error": error, "preset": "quick"} if error else \
        {"status": "done", "seconds": 74.2, "preset": "quick"}
    write_status(path, **status)
    render_report(path)
    return {"status": status["status"], "run": path.name, "seconds": status["seconds"], "error": error}


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="chromium is not installed")
def test_tour_page_and_report_fit_a_laptop_and_a_phone(tmp_path):
    assert CHROMIUM, "CI must install chromium (see .ci/run)"
    tour_dir, profile, shots = tmp_path / "tour", tmp_path / "profile", tmp_path / "screenshots"
    tour_dir.mkdir()
    shots.mkdir()
    met, missed, no_bar = "init-geometry", "attention-mnist", "vae-flat-mnist"
    cards = [{"post": p.number, "title": p.title, "url": p.url, "experiment": None, "status": "missing"}
             for p in POSTS]
    for card, name in zip(cards, ["energy-2d", "ot-duality", "ogan-mnist", "ema-mnist", met, missed, no_bar,
                                  "flyvec-corpus"], strict=True):
        card.update(experiment=name, status="pending", claim=CLAIMS[name].text, metric=CLAIMS[name].metric)
    cards[4].update(_fake_run(tour_dir, met, [
        ("max_rel_err_mc_vs_post", 0.0071, {"bar": 0.02, "direction": "min", "note": "Monte-Carlo vs the table"}),
        ("max_rel_err_exact_vs_post", 2.1e-5, {"bar": 1e-3, "direction": "min"}),
        ("var_theta_n3", 0.4674, {"paper": 0.4674, "direction": "min"})]))
    cards[5].update(_fake_run(tour_dir, missed, [
        ("speedup_vs_softmax_nocache", 41.3, {"bar": 100, "paper": 317, "note": "images/s, linear ÷ softmax"}),
        ("speedup_vs_softmax_kv_cache", 6.2, {"paper": 19}),
        ("speedup_vs_softmax_nocache_same_batch", 12.5, {}),
        ("bits_per_dim_linear", 0.7412, {"direction": "min", "paper": 0.644}),
        ("bits_per_dim_softmax", 0.7188, {"direction": "min", "paper": 0.621}),
        ("a_sixth_metric_that_stays_in_the_full_report", 1.0, {})], wide_table=True))
    cards[6].update(_fake_run(tour_dir, no_bar, [("test_nll_nats", 86.4, {"direction": "min"})]))
    cards[0].update(_fake_run(tour_dir, "energy-2d", [], error="RuntimeError: deliberate failure in "
                              "/a/very/long/path/without/any/spaces/that/must/wrap/inside/its/card/and/not/push/"
                              "the/page/sideways/model_checkpoint_step_000200.pt"))
    cards[1].update(status="running", started=time.time() - 95)
    cards[2]["status"] = "missing"
    index = render_index(tour_dir, cards, running=True, preset="quick", started=time.time() - 400,
                         env=collect_env("cpu"))

    for width in WIDTHS:
        layout = _render(index, profile, width, shots)
        assert layout["images"] and all(img["loaded"] == "1" for img in layout["images"]), layout["images"]
        local = [href for href in layout["links"] if not re.match(r"https?://", href)]
        assert {f"{cards[i]['run']}/report.html" for i in (0, 4, 5, 6)} <= set(local)
        assert all((tour_dir / href).is_file() for href in local), local
        assert all(post.url in layout["links"] for post in POSTS)

        assert layout["page"] <= layout["vw"] and layout["body"] <= layout["vw"], (width, layout)
        assert len(layout["cards"]) == len(POSTS)
        for card in layout["cards"]:
            assert card["w"] <= layout["vw"] and card["sw"] <= card["cw"], (width, card)
        by_name = {c["name"]: c for c in layout["cards"]}
        done = [c for c in layout["cards"] if c["status"] == "done"]
        assert {c["name"] for c in done} == {met, missed, no_bar}
        for card in done:
            assert card["value"] and card["mark"], card
        assert by_name[met]["value"] == "0.0071" and by_name[met]["mark"] == "✓ met"
        assert by_name[missed]["value"] == "41.3" and by_name[missed]["mark"] == "✗ missed"
        assert by_name[no_bar]["mark"] == "no bar"
        assert by_name["energy-2d"]["status"] == "failed" and by_name["energy-2d"]["mark"] is None
        assert re.fullmatch(r"1 min \d\d s", by_name["ot-duality"]["since"]), by_name["ot-duality"]
        assert [c["status"] for c in layout["cards"]].count("pending") == 2
        assert all(img["loaded"] == "1" and img["w"] <= img["room"] + 0.5 for img in layout["images"]), layout["images"]

    # The report with the wide table and a figure wider than a phone: the table scrolls in its own box.
    report = tour_dir / cards[5]["run"] / "report.html"
    for width in WIDTHS:
        layout = _render(report, profile, width, shots)
        assert layout["images"] and all(i["src"] == "data:image/png;base64," for i in layout["images"])
        assert layout["page"] <= layout["vw"] and layout["body"] <= layout["vw"], (width, layout)
        assert all(img["loaded"] == "1" and img["w"] <= img["room"] + 0.5 for img in layout["images"]), layout["images"]
        assert all(w["w"] <= layout["vw"] for w in layout["wraps"]), layout["wraps"]
        if width < 500:
            assert any(w["sw"] > w["cw"] for w in layout["wraps"]), "the wide table should scroll in its box"
    assert len(list(shots.glob("*.png"))) == 2 * len(WIDTHS)
