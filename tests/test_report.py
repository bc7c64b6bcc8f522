"""The predict report: a self-contained page that a real browser renders, with every picture loaded, sorted and
filtered by its script. Headless Chromium (Debian's package, installed by .ci/run) opens it from disk."""

import re
import shutil
import subprocess
import urllib.parse
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from zoomin_jax import overlay, report

pytestmark = pytest.mark.slow  # headless Chromium

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


REFERRAL = {"threshold": 0.5, "sensitivity": 0.92, "specificity": 0.81, "target_sensitivity": 0.9,
            "num_positive": 25, "num_negative": 58, "fitted_on": "validation", "step": 8,
            "note": "fitted on validation at step 8"}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report over six made-up rows (grades 0, 2, 4, 2, 1, 3; no model needed) with real pictures, and one
    unreadable file; the decision refers at P(referable) >= 0.5."""
    out = tmp_path_factory.mktemp("predict_out")
    rng = np.random.default_rng(0)
    centres = tuple(np.arange(7) * 10 + 16.875 for _ in range(2))
    rows = []
    scale = overlay.Scale(0.0, 1.0)
    for i, (grade, p_ref) in enumerate(((0, 0.05), (2, 0.7), (4, 0.99), (2, 0.6), (1, 0.3), (3, 0.95))):
        display = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
        boxes = np.array([[10, 10, 60, 60], [40, 30, 90, 80]])
        patches = [rng.integers(0, 255, (150, 150, 3), dtype=np.uint8) for _ in boxes]
        pic = overlay.picture(display, rng.random((7, 7)), rng.random((7, 7, 4)), boxes, centres, [f"photo {i}"],
                              "gated", scale, scale, patches)
        # photo 5's name holds what a URL reads as a fragment, a query and an escape
        rel = f"pictures/{'sub/' if i % 2 else ''}photo{i}{' #1?x=%41' if i == 5 else ''}.jpg.jpg"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        pic.save(out / rel, quality=90)
        probs = np.full(5, 0.0)
        probs[grade] = 0.5
        rows.append({"path": rel[9:-4], "photo_width": 600, "photo_height": 400, "grade": grade,
                     "probabilities": list(probs + 0.1), "expected_grade": float(grade), "grade_thresholded": grade,
                     "p_abnormal": max(p_ref, 0.5), "p_referable": p_ref, "refer": p_ref >= REFERRAL["threshold"],
                     "boxes": boxes.tolist(), "box_scores": [0.5, 0.25], "picture": rel,
                     "thresholds": "fitted on validation at step 8"})
    path = report.write_report(out, rows, [("broken.jpg", "truncated", "image file is truncated")], 8, "runs/x",
                               REFERRAL, levels=(3, 4))
    return path, rows


def test_the_page_is_self_contained_and_names_only_pictures_that_exist(page):
    path, rows = page
    text = path.read_text()
    parser = _Tags()
    parser.feed(text)
    srcs = [a["src"] for tag, a in parser.tags if tag == "img"]  # URL paths: unquoted, they name the files
    assert len(srcs) == len(rows) and all((path.parent / urllib.parse.unquote(s)).is_file() for s in srcs)
    assert "lesion levels 3, 4" in text and "levels 1-4" not in text  # the levels the boxes are chosen on
    assert text.count("fitted on validation at step 8") == len(rows)
    refs = [a.get("src") or a.get("href") for tag, a in parser.tags if tag in ("img", "script", "link", "a")]
    assert not [r for r in refs if r and re.match(r"(https?:)?//", r)], refs  # nothing from a network
    assert "broken.jpg" in text and "truncated" in text
    assert text.count('class="card"') == len(rows)
    # One decision per photograph, from the stated rule, and no second one ("referable", "abnormal" flags).
    assert "refer</b> when P(grade &ge; 2) &ge; 0.500" in text and "sensitivity" in text and "92.0%" in text
    decisions = re.findall(r'<span class="decision (refer|keep)">', text)
    assert decisions == ["refer" if r["refer"] else "keep" for r in rows]
    assert "abnormal</span>" not in text and "referable</span>" not in text
    assert text.count('loading="lazy"') == len(rows)


def _chromium(url, *extra, tmp):
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, url],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/run installs Debian's package)")
def test_chromium_renders_it_loads_every_picture_sorts_and_filters(page, tmp_path):
    path, rows = page
    url = path.as_uri()
    # Default view: sorted by referable probability, most urgent first; every picture loaded (a window tall enough
    # for the lazy pictures), each the whole picture (both panels and the colour bar); no script error.
    dump = _chromium(url, "--dump-dom", "--window-size=1200,30000", tmp=tmp_path)
    assert "Uncaught" not in dump.stderr and not re.search(r"CONSOLE.*[Ee]rror", dump.stderr), dump.stderr[-2000:]
    assert f'data-images-ok="{len(rows)}/{len(rows)}"' in dump.stdout
    assert f'data-picture-widths="{2 * overlay.PANEL + overlay.BAR}"' in dump.stdout
    assert 'id="rule"' in dump.stdout
    order = [float(x) for x in re.findall(r'data-referable="([0-9.]+)"', dump.stdout)]
    assert order == sorted((r["p_referable"] for r in rows), reverse=True)
    # The fragment's filter: only grade-2 cards are shown, sorted by file.
    dump = _chromium(url + "#grade=2&sort=path", "--dump-dom", tmp=tmp_path)
    cards = re.findall(r'<div class="card" data-grade="(\d)"[^>]*data-path="([^"]+)"( hidden="")?', dump.stdout)
    shown = [(g, p) for g, p, hidden in cards if not hidden]
    assert shown == sorted((str(r["grade"]), r["path"]) for r in rows if r["grade"] == 2)
    assert [p for _, p, _ in cards] == sorted(r["path"] for r in rows)
    assert re.search(r'<span id="shown">2</span>', dump.stdout)
    # Values the page does not know (a hand-edited address): ignored, the default view, no script error.
    dump = _chromium(url + "#sort=file&grade=9", "--dump-dom", tmp=tmp_path)
    assert "Uncaught" not in dump.stderr and not re.search(r"CONSOLE.*[Ee]rror", dump.stderr), dump.stderr[-2000:]
    order = [float(x) for x in re.findall(r'data-referable="([0-9.]+)"', dump.stdout)]
    assert order == sorted((r["p_referable"] for r in rows), reverse=True)
    assert re.search(rf'<span id="shown">{len(rows)}</span>', dump.stdout)
    # A screenshot a person would see: not a blank page.
    shot = tmp_path / "report.png"
    _chromium(url, f"--screenshot={shot}", "--window-size=1000,1400", tmp=tmp_path)
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (1400, 1000, 3) and pixels.std() > 20
