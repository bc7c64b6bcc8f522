"""One self-contained HTML page over a predict run: every photograph with its one decision, its grade and picture.

`report.html` sits beside `predictions.json` and `pictures/`; it references the pictures by relative URL (quoted)
and nothing else (no network, no script or style from elsewhere). The page is a jinja2 template with autoescaping:
file names and details are text, never markup.

One decision per photograph, which cannot contradict itself: refer when P(grade >= 2) reaches the run's referral
operating point, fitted on its evaluation split at this checkpoint (`metrics.operating_point`, stored with the run);
the page states that rule with the sensitivity and specificity it had there, and shows beside each decision the
most likely grade as information, not as a second rule. Without an operating point (a run older than it), the page
says so and shows P(referable) alone.

Photographs are sorted by referable probability (most urgent first), by grade or by file, and filtered by grade;
the choice is kept in the address's fragment (`report.html#grade=2&sort=grade`), values the page does not know
are ignored. Pictures load lazily, so a report over 10,000 photographs opens at once; the page records how many of
the pictures the browser loaded, and their widths, in `<body data-images-ok="loaded/total"
data-picture-widths="...">` (the tests read them in a headless browser).
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import jinja2

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Zoom-in-Net predictions ({{ rows|length }} photographs)</title>
<style>
body { font-family: sans-serif; background: #161616; color: #e8e8e8; margin: 1.5em; }
h1 { font-size: 1.3em; } .note { color: #aaa; font-size: 0.95em; max-width: 75em; }
.rule { font-size: 1.05em; max-width: 75em; margin: 0.6em 0; }
.controls { margin: 1em 0; } select { margin-right: 1.5em; }
.card { background: #222; border-radius: 6px; padding: 0.8em; margin: 0 0 1.2em 0; }
.card[hidden] { display: none; } .card img { max-width: 100%; display: block; margin-top: 0.5em; }
.decision { font-weight: bold; font-size: 1.2em; } .refer { color: #ff8a65; } .keep { color: #9ccc65; }
table { border-collapse: collapse; margin-top: 0.4em; } td, th { padding: 0.15em 0.6em; text-align: right; }
.bad td { text-align: left; }
</style>
<script>
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
function count() {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0);
  document.body.dataset.imagesOk = ok.length + '/' + imgs.length;
  document.body.dataset.pictureWidths = Array.from(new Set(ok.map(i => i.naturalWidth))).join(',');
}
window.addEventListener('hashchange', apply);
document.addEventListener('DOMContentLoaded', () => {
  apply();
  for (const img of document.images) img.addEventListener('load', count);
});
window.addEventListener('load', count);
</script></head>
<body data-images-ok="" data-picture-widths="">
<h1>Zoom-in-Net predictions: {{ rows|length }} photographs, checkpoint step {{ step }}</h1>
{% if referral %}
<p class="rule" id="rule">Decision: <b>refer</b> when P(grade &ge; 2) &ge; {{ "%.3f"|format(referral.threshold) }}.
Fitted on {{ referral.fitted_on }} at step {{ referral.step }} to refer
{{ "%.0f"|format(100 * referral.target_sensitivity) }}%
of its referable photographs: there it referred {{ "%.1f"|format(100 * referral.sensitivity) }}% of the
{{ referral.num_positive }} referable ones (sensitivity) and kept {{ "%.1f"|format(100 * referral.specificity) }}% of
the {{ referral.num_negative }} others (specificity){% if in_sample %}; this page grades
that same split, so these figures are in-sample{% endif %}. The most likely grade is shown beside each decision as
information, not as a second rule.</p>
{% else %}
<p class="rule" id="rule">No referral operating point was fitted for this checkpoint (a run older than it, or an
evaluation split without referable photographs): each photograph shows P(grade &ge; 2) and its most likely grade.</p>
{% endif %}
<p class="note">Run: {{ workdir }}. {{ counts }}. Each picture: the photograph clean and under the map the boxes were
chosen on (viridis, its colour bar beside it, one scale for the whole run), the boxes ranked 1..N on both; the boxes'
pixels in the original photograph at its own resolution; the attention of lesion levels {{ levels }}.
A research model, not a diagnosis.</p>
<div class="controls">show <select id="grade" onchange="choose()"><option value="all">all grades</option>
{% for g in range(5) %}<option value="{{ g }}">grade {{ g }}</option>{% endfor %}
</select> sort by <select id="sort" onchange="choose()"><option value="referable">referable probability</option>
<option value="grade">grade</option><option value="path">file</option></select>
<span id="shown">{{ rows|length }}</span> shown</div>
<div id="cards">
{% for r in rows %}
<div class="card" data-grade="{{ r.grade }}" data-referable="{{ "%.6f"|format(r.p_referable) }}"
 data-path="{{ r.path }}">
<div>{% if r.refer is none %}<span class="decision">P(referable) {{ "%.2f"|format(r.p_referable) }}</span>
{% elif r.refer %}<span class="decision refer">REFER</span>
{% else %}<span class="decision keep">no referral</span>{% endif %}
{% if r.refer is not none %} &middot; P(referable) {{ "%.3f"|format(r.p_referable) }}{% endif %}
&middot; most likely grade {{ r.grade }}{% if r.label is defined %} &middot; true grade {{ r.label }}{% endif %}
{% if r.grade_thresholded is not none %} &middot; thresholded grade {{ r.grade_thresholded }}
({{ r.thresholds }}){% endif %}
&middot; {{ r.path }} ({{ r.photo_width }}x{{ r.photo_height }})</div>
<table><tr><th>grade</th>{% for g in range(r.probabilities|length) %}<th>{{ g }}</th>{% endfor %}</tr>
<tr><th>P</th>{% for p in r.probabilities %}<td>{{ "%.3f"|format(p) }}</td>{% endfor %}</tr></table>
<div class="note">boxes (y0, x0, y1, x1) in the {{ "stored image" if r.label is defined else "photograph" }}'s pixels:
{{ r.box_text }}</div>
{% if r.picture %}<img src="{{ r.picture_url }}" loading="lazy"
 alt="the photograph, its map and boxes, and the boxes' pixels of {{ r.path }}">{% endif %}
</div>
{% endfor %}
</div>
{% if unreadable %}
<h2>Unreadable ({{ unreadable|length }})</h2><table class="bad"><tr><th>file</th><th>reason</th><th>detail</th></tr>
{% for p, reason, detail in unreadable %}<tr><td>{{ p }}</td><td>{{ reason }}</td><td>{{ detail }}</td></tr>{% endfor %}
</table>
{% endif %}
</body></html>
"""


def write_report(out_dir: Path, rows: list[dict], unreadable: list, step: int, workdir: str,
                 referral: dict | None = None, levels: tuple[int, ...] = (1, 2, 3, 4)) -> Path:
    """Writes `out_dir/report.html` (module docstring) and returns its path.

    Args:
      rows: predict's records (path, grade, probabilities, p_referable, refer, boxes, picture, ...).
      unreadable: (file, reason, detail) of the files that could not be used.
      referral: the operating point the decisions use (`evaluate.saved_referral` with its "note"), or None.
      levels: the lesion levels the boxes are chosen on.
    """
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    cards = []
    for r in rows:
        boxes = "; ".join(f"{i + 1}: ({b[0]}, {b[1]}, {b[2]}, {b[3]}) score {s:.3g}"
                          for i, (b, s) in enumerate(zip(r["boxes"], r["box_scores"], strict=True)))
        picture = r.get("picture")
        # A file name is a URL path here: '#', '?', '%' and spaces quoted (then escaped for the attribute).
        cards.append({**r, "box_text": boxes, "picture": picture, "refer": r.get("refer"),
                      "picture_url": urllib.parse.quote(picture, safe="/") if picture else "",
                      "thresholds": r.get("thresholds") or ""})
    grades = sorted({r["grade"] for r in rows})
    counts = ", ".join(f"grade {g}: {sum(r['grade'] == g for r in rows)}" for g in grades)
    if referral is not None:
        refer = [r for r in rows if r.get("refer")]
        counts += f"; referred {len(refer)} of {len(rows)}"
    page = env.from_string(_TEMPLATE).render(rows=cards, unreadable=unreadable, step=step, workdir=str(workdir),
                                             referral=referral, counts=counts, levels=", ".join(map(str, levels)),
                                             in_sample=bool(referral and str(referral.get("note", "")).endswith(
                                                 "(in-sample)")))
    path = Path(out_dir) / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
