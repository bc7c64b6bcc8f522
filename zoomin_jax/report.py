"""One self-contained HTML page over a predict run: every photograph with its grade, flags, probabilities and picture.

`report.html` sits beside `predictions.json` and `pictures/`; it references the pictures by relative path and
nothing else (no network, no script or style from elsewhere). Photographs are sorted by referable probability (most
urgent first) or by grade or by path, and filtered by grade; the choice is kept in the address's fragment
(`report.html#grade=2&sort=grade`), so a link opens the same view. After loading, the page records how many of its
pictures loaded in `<body data-images-ok="loaded/total">` (the tests read it in a headless browser).
"""

from __future__ import annotations

import html
import urllib.parse
from pathlib import Path

_STYLE = """
body { font-family: sans-serif; background: #161616; color: #e8e8e8; margin: 1.5em; }
h1 { font-size: 1.3em; } .note { color: #aaa; font-size: 0.9em; max-width: 70em; }
.controls { margin: 1em 0; } select { margin-right: 1.5em; }
.card { background: #222; border-radius: 6px; padding: 0.8em; margin: 0 0 1.2em 0; }
.card[hidden] { display: none; } .card img { max-width: 100%; display: block; margin-top: 0.5em; }
.grade { font-weight: bold; font-size: 1.1em; } .referable { color: #ff8a65; } .abnormal { color: #ffd54f; }
table { border-collapse: collapse; margin-top: 0.4em; } td, th { padding: 0.15em 0.6em; text-align: right; }
.bad td { text-align: left; }
"""

_SCRIPT = """
const GRADES = ['all', '0', '1', '2', '3', '4'], SORTS = ['referable', 'grade', 'path'];
function params() {  // values the page does not know (a hand-edited address) fall back to the defaults
  const p = new URLSearchParams(location.hash.slice(1));
  const grade = p.get('grade'), sort = p.get('sort');
  return {grade: GRADES.includes(grade) ? grade : 'all', sort: SORTS.includes(sort) ? sort : 'referable'};
}
function apply() {
  const {grade, sort} = params();
  document.getElementById('grade').value = grade;
  document.getElementById('sort').value = sort;
  const list = document.getElementById('cards');
  const cards = Array.from(list.children);
  const key = {referable: c => -parseFloat(c.dataset.referable), grade: c => -parseInt(c.dataset.grade),
               path: c => c.dataset.path};
  cards.sort((a, b) => { const x = key[sort](a), y = key[sort](b); return x < y ? -1 : x > y ? 1 : 0; });
  let shown = 0;
  for (const c of cards) {
    list.appendChild(c);
    c.hidden = !(grade === 'all' || c.dataset.grade === grade);
    shown += c.hidden ? 0 : 1;
  }
  document.getElementById('shown').textContent = shown;
}
function choose() {
  location.hash = 'grade=' + document.getElementById('grade').value + '&sort=' + document.getElementById('sort').value;
}
window.addEventListener('hashchange', apply);
document.addEventListener('DOMContentLoaded', apply);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.imagesOk = ok + '/' + imgs.length;
});
"""


def _card(r: dict) -> str:
    p = r["probabilities"]
    flags = []
    if r["referable"]:
        flags.append('<span class="referable">referable</span>')
    elif r["abnormal"]:
        flags.append('<span class="abnormal">abnormal</span>')
    else:
        flags.append("no DR signs above 0.5")
    thr = ("" if r.get("grade_thresholded") is None else
           f" (thresholded: {r['grade_thresholded']}, thresholds {html.escape(r.get('thresholds') or '')})")
    if "label" in r:  # a prepared split's example: its true grade beside the prediction
        thr += f" &middot; true grade {r['label']}"
    probs = "".join(f"<td>{x:.3f}</td>" for x in p)
    boxes = "; ".join(f"{i + 1}: ({b[0]}, {b[1]}, {b[2]}, {b[3]}) score {s:.3g}"
                      for i, (b, s) in enumerate(zip(r["boxes"], r["box_scores"], strict=True)))
    # A file name is a URL path here: '#', '?', '%' and spaces quoted, then HTML-escaped for the attribute.
    src = html.escape(urllib.parse.quote(r["picture"], safe="/")) if r.get("picture") else ""
    picture = (f'<img src="{src}" alt="maps, boxes and patches of {html.escape(r["path"])}" '
               'loading="eager">' if r.get("picture") else "")
    return (
        f'<div class="card" data-grade="{r["grade"]}" data-referable="{r["p_referable"]:.6f}" '
        f'data-path="{html.escape(r["path"])}">'
        f'<div><span class="grade">grade {r["grade"]}</span>{thr} &middot; {" ".join(flags)} &middot; '
        f'P(abnormal) {r["p_abnormal"]:.3f}, P(referable) {r["p_referable"]:.3f} &middot; '
        f'{html.escape(r["path"])} ({r["photo_width"]}x{r["photo_height"]})</div>'
        f'<table><tr><th>grade</th><th>0</th><th>1</th><th>2</th><th>3</th><th>4</th></tr>'
        f'<tr><th>P</th>{probs}</tr></table>'
        f'<div class="note">boxes (y0, x0, y1, x1) in the {"stored image" if "label" in r else "photograph"}\'s '
        f'pixels: {html.escape(boxes)}</div>'
        f"{picture}</div>"
    )


def write_report(out_dir: Path, rows: list[dict], unreadable: list, step: int, workdir: str,
                 levels: tuple[int, ...] = (1, 2, 3, 4)) -> Path:
    """Writes `out_dir/report.html` (module docstring) and returns its path."""
    grades = sorted({r["grade"] for r in rows})
    options = "".join(f'<option value="{g}">grade {g}</option>' for g in range(5))
    bad = "".join(f"<tr><td>{html.escape(p)}</td><td>{html.escape(reason)}</td><td>{html.escape(detail)}</td></tr>"
                  for p, reason, detail in unreadable)
    bad = (f'<h2>Unreadable ({len(unreadable)})</h2><table class="bad"><tr><th>file</th><th>reason</th>'
           f"<th>detail</th></tr>{bad}</table>" if unreadable else "")
    counts = ", ".join(f"grade {g}: {sum(r['grade'] == g for r in rows)}" for g in grades)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Zoom-in-Net predictions ({len(rows)} photographs)</title>
<style>{_STYLE}</style><script>{_SCRIPT}</script></head>
<body data-images-ok="">
<h1>Zoom-in-Net predictions: {len(rows)} photographs, checkpoint step {step}</h1>
<p class="note">Run: {html.escape(str(workdir))}. {counts}. Each picture: the photograph with the map the boxes were
chosen on as heat and the boxes ranked 1..N, the attention of lesion levels {", ".join(map(str, levels))} (the maps the
boxes are chosen on), and the zoomed patches C-Net saw.
Abnormal: P(grade &ge; 1) &gt; 0.5; referable: P(grade &ge; 2) &gt; 0.5. A research model, not a diagnosis.</p>
<div class="controls">show <select id="grade" onchange="choose()"><option value="all">all grades</option>{options}
</select> sort by <select id="sort" onchange="choose()"><option value="referable">referable probability</option>
<option value="grade">grade</option><option value="path">file</option></select>
<span id="shown">{len(rows)}</span> shown</div>
<div id="cards">{"".join(_card(r) for r in rows)}</div>
{bad}
</body></html>
"""
    path = Path(out_dir) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
