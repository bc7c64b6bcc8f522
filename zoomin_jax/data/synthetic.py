"""Synthetic fundus photographs with diabetic-retinopathy lesions placed by ICDR-like rules (pure numpy + PIL).

This is the generator behind the `synthetic_fundus` dataset, the project's embedded default: it needs no download
and no TensorFlow, and it knows the truth — the grade and a tight box and kind for every lesion it draws — so
grading and lesion localisation can both be measured exactly.

An image is a disc-cropped colour fundus photograph: black surround, a circular eye disc filling the square,
illumination falling off toward the rim, a per-"patient" orange/red background with low-frequency texture, a bright
optic disc, a darker macula and a tapering, branching vessel tree (veins darker and wider than arteries) whose main
arcades bend around the macula. Lesions, by grade (loosely the International Clinical DR scale):

  0  none
  1  microaneurysms only (4-10, clustered in the posterior pole)
  2  more microaneurysms, plus haemorrhages and/or hard-exudate clusters
  3  many haemorrhages in all four quadrants, cotton-wool spots, microaneurysms, sometimes hard exudates
  4  grade-3 findings plus new vessels and/or a preretinal haemorrhage

Microaneurysms scale with the image (radius image_size/400..image_size/250, at least 1 px): clearly visible at the
stored resolution, about one pixel at the model's low resolution (image_size / 2.5) — which is the point of zooming.
Distractors that are not lesions (dust shadows, light reflexes, drusen-like dots, pigment dots) appear with a
configurable rate, on any grade, so "any dot means disease" is not a shortcut. Lesions lie inside the eye disc and
off the optic disc; every box is tight around the pixels a lesion changed (alpha > BOX_ALPHA), end exclusive.

Everything is a function of the seed: the same (seed, grade, image_size, distractor_rate) gives the same bytes.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Kinds drawn here; the names are those of `zoomin_jax.data.features.LESION_KINDS` (not imported: no TFDS here).
MICROANEURYSM = "microaneurysm"
HAEMORRHAGE = "haemorrhage"
HARD_EXUDATE = "hard_exudate"
COTTON_WOOL_SPOT = "cotton_wool_spot"
NEW_VESSELS = "new_vessels"
PRERETINAL_HAEMORRHAGE = "preretinal_haemorrhage"

# Close to the Kaggle EyePACS training labels (73.5 / 7.0 / 15.1 / 2.5 / 2.0 %).
EYEPACS_GRADE_DISTRIBUTION = (0.73, 0.07, 0.15, 0.025, 0.025)

DISC_FILL = 0.985  # eye-disc radius as a fraction of half the image side
BOX_ALPHA = 0.15  # a pixel belongs to a lesion's box when the lesion changed it by more than this blend weight
# Microaneurysm radius as a fraction of image_size (at least 1 px): 3-5 px at 1230, 1-1.6 px at 400.
MA_RADIUS_FRACTION = (1 / 400, 1 / 250)

# Microaneurysms cluster in the posterior pole: per image, a cluster centre is drawn around the macula (offset
# sigma, a fraction of image_size) and a fraction MA_CLUSTERED of the microaneurysms fall around it (spread sigma,
# ~14 px at 400: a 96-px patch on the cluster holds most of them); the rest follow the general placement.
MA_CLUSTER_OFFSET = 0.1
MA_CLUSTER_SIGMA = 0.035
MA_CLUSTERED = 0.9
MA_COUNT_GRADE_1 = (4, 11)  # [low, high) microaneurysms in a grade-1 image

Box = tuple[int, int, int, int]


# ----------------------------------------------------------------------------------------------------------------
# Grades


def normalise_distribution(distribution) -> np.ndarray:
    """Returns the grade distribution as float64 probabilities summing to one (raises on negatives or zero sum)."""
    p = np.asarray(distribution, dtype=np.float64)
    if p.ndim != 1 or p.size != 5 or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"grade distribution must be 5 non-negative numbers with a positive sum, got {distribution}")
    return p / p.sum()


def grade_quotas(n: int, distribution=EYEPACS_GRADE_DISTRIBUTION) -> np.ndarray:
    """How many of `n` examples get each grade: largest-remainder rounding of n * p.

    When n is at least the number of grades with p > 0, each such grade gets at least one example (taken from the
    grade with the largest count), so small splits still contain every grade.

    Args:
      n: number of examples.
      distribution: five non-negative weights for grades 0-4 (normalised here).

    Returns:
      int64[5] counts summing to n.
    """
    p = normalise_distribution(distribution)
    exact = n * p
    counts = np.floor(exact).astype(np.int64)
    remainder = n - counts.sum()
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:remainder]] += 1
    present = p > 0
    if n >= present.sum():
        for g in np.flatnonzero(present & (counts == 0)):
            counts[np.argmax(counts)] -= 1
            counts[g] += 1
    return counts


def assign_grades(n: int, distribution=EYEPACS_GRADE_DISTRIBUTION, seed: int = 0) -> np.ndarray:
    """Deterministic grades for examples 0..n-1: exactly `grade_quotas(n, distribution)`, in a shuffled order.

    Returns:
      int64[n] grades; the same (n, distribution, seed) always gives the same array.
    """
    counts = grade_quotas(n, distribution)
    grades = np.repeat(np.arange(5), counts)
    np.random.default_rng(seed).shuffle(grades)
    return grades


# ----------------------------------------------------------------------------------------------------------------
# Small drawing helpers


@functools.lru_cache(maxsize=8)
def _radius_map(size: int) -> np.ndarray:
    """Distance of each pixel centre from the image centre, float32[size, size] (cached, read-only)."""
    c = (size - 1) / 2
    ax = np.arange(size, dtype=np.float32) - c
    r = np.sqrt(ax[:, None] ** 2 + ax[None, :] ** 2)
    r.setflags(write=False)
    return r


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish-amplitude noise varying over about size/cells pixels: a random grid upsampled bicubically."""
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))


def _window(cy: float, cx: float, half: float, size: int):
    """Integer window [y0, y1) x [x0, x1) around (cy, cx) clipped to the image, and its pixel-centre grids."""
    y0, y1 = max(0, int(math.floor(cy - half))), min(size, int(math.ceil(cy + half)) + 1)
    x0, x1 = max(0, int(math.floor(cx - half))), min(size, int(math.ceil(cx + half)) + 1)
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    return y0, y1, x0, x1, yy, xx


def _soft_disc(d: np.ndarray, radius: float, edge: float = 1.0) -> np.ndarray:
    """Anti-aliased disc: 1 inside `radius`, 0 outside, a linear ramp `edge` pixels wide across the rim."""
    return np.clip((radius - d) / edge + 0.5, 0.0, 1.0)


def _box_of(alpha: np.ndarray, y0: int, x0: int) -> Box | None:
    """Tight box (y0, x0, y1, x1), end exclusive, around alpha > BOX_ALPHA in a window placed at (y0, x0)."""
    m = alpha > BOX_ALPHA
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return (y0 + int(rows[0]), x0 + int(cols[0]), y0 + int(rows[-1]) + 1, x0 + int(cols[-1]) + 1)


def _tint(img: np.ndarray, y0: int, x0: int, alpha: np.ndarray, factors) -> None:
    """Multiplies the window by (1 - alpha * (1 - factors)) per channel: dark, absorbing things (blood, shadows).

    `img` is planar float32 [3, H, W] (one contiguous plane per channel: faster than interleaved here).
    """
    h, w = alpha.shape
    for c in range(3):
        img[c, y0 : y0 + h, x0 : x0 + w] *= 1.0 - alpha * (1.0 - factors[c])


def _lerp(img: np.ndarray, y0: int, x0: int, alpha: np.ndarray, colour) -> None:
    """Blends the window toward `colour` with weight alpha: bright, reflecting things (exudates, optic disc)."""
    h, w = alpha.shape
    for c in range(3):
        region = img[c, y0 : y0 + h, x0 : x0 + w]
        region += alpha * (np.float32(colour[c]) - region)


# ----------------------------------------------------------------------------------------------------------------
# The eye


class _Eye:
    """Geometry of one eye: disc, optic disc, macula; plus the lesions placed so far (to keep them apart)."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.size = size
        self.c = (size - 1) / 2
        self.radius = DISC_FILL * size / 2
        side = rng.choice([-1.0, 1.0])  # optic disc left or right of the macula: right or left eye
        self.my = self.c + rng.normal(0, 0.02) * size
        self.mx = self.c + rng.normal(0, 0.02) * size - side * 0.03 * size
        self.od_r = rng.uniform(0.048, 0.06) * size
        self.oy = self.my - rng.uniform(0.0, 0.05) * size
        self.ox = self.mx + side * rng.uniform(0.26, 0.31) * size
        self.placed: list[tuple[float, float, float]] = []

    def fits(self, cy: float, cx: float, extent: float, gap: float = 1.0) -> bool:
        """Whether a lesion of radius `extent` at (cy, cx) is inside the eye disc, off the optic disc, not on others."""
        if math.hypot(cy - self.c, cx - self.c) + extent > 0.93 * self.radius:
            return False
        if math.hypot(cy - self.oy, cx - self.ox) < 1.25 * self.od_r + extent:
            return False
        return all(math.hypot(cy - y, cx - x) > extent + r + gap for y, x, r in self.placed)


def _grow_vessels(rng: np.random.Generator, eye: _Eye):
    """A branching, tapering vessel tree from the optic disc; returns (artery_segments, vein_segments).

    Each segment is (x0, y0, x1, y1, width_px). Main temporal arcades orbit the macula; nasal trunks and branches
    spread away from the optic disc. A growth direction is the previous one pulled toward a guide direction plus
    noise, so vessels are smooth but tortuous.
    """
    s = eye.size
    step = 0.011 * s
    side = 1.0 if eye.ox > eye.mx else -1.0  # +1: optic disc right of the macula
    trees = ([], [])
    for kind, w0 in ((0, rng.uniform(0.0065, 0.0078) * s), (1, rng.uniform(0.0085, 0.0105) * s)):
        trunks = []
        for vert in (-1.0, 1.0):  # superior / inferior
            # temporal arcade: leaves the disc vertically, then bends toward the macula side
            a = math.atan2(vert, -side * rng.uniform(0.15, 0.5))
            trunks.append((a, w0 * rng.uniform(0.9, 1.05), "arcade", vert))
            # nasal trunk: leaves toward the nasal side
            a = math.atan2(vert * rng.uniform(0.3, 1.2), side)
            trunks.append((a, w0 * rng.uniform(0.6, 0.8), "out", vert))
        for _ in range(rng.integers(1, 3)):  # small vessels to the macula or nasal periphery
            a = rng.uniform(-math.pi, math.pi)
            trunks.append((a, w0 * rng.uniform(0.35, 0.5), "out", 0.0))
        stack = []
        for a, w, guide, vert in trunks:
            off = (eye.od_r * 0.3) * rng.uniform(-1, 1)
            stack.append((eye.ox + off * 0.5, eye.oy + off, a, w, guide, vert, 0))
        segs = trees[kind]
        budget = 2500
        while stack and budget > 0:
            x, y, a, w, guide, vert, depth = stack.pop()
            dx, dy = math.cos(a), math.sin(a)
            for _ in range(400):
                budget -= 1
                if guide == "arcade":
                    # orbit the macula: tangent of the circle around it, going away from the disc, slight outward
                    rx, ry = x - eye.mx, y - eye.my
                    rn = math.hypot(rx, ry) + 1e-6
                    tx, ty = -ry / rn, rx / rn
                    if tx * dx + ty * dy < 0:
                        tx, ty = -tx, -ty
                    gx, gy, pull = tx + 0.2 * rx / rn, ty + 0.2 * ry / rn, 0.3
                else:
                    rx, ry = x - eye.ox, y - eye.oy
                    rn = math.hypot(rx, ry) + 1e-6
                    gx, gy, pull = rx / rn, ry / rn, 0.06
                wobble = 0.08 + 0.1 / (1.0 + w / (0.003 * s))  # thick vessels run smoother than thin ones
                dx += pull * gx + rng.normal(0, wobble)
                dy += pull * gy + rng.normal(0, wobble)
                n = math.hypot(dx, dy) + 1e-9
                dx, dy = dx / n, dy / n
                nx, ny = x + step * dx, y + step * dy
                segs.append((x, y, nx, ny, w))
                x, y = nx, ny
                w *= 0.992
                if math.hypot(x - eye.c, y - eye.c) > eye.radius * 0.99 or w < max(0.45, 0.0013 * s):
                    break
                if math.hypot(x - eye.mx, y - eye.my) < 0.06 * s:  # foveal avascular zone
                    break
                if rng.random() < 0.055 and w > max(1.0, 0.003 * s):
                    cw = w * rng.uniform(0.5, 0.8)
                    turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2)
                    stack.append((x, y, math.atan2(dy, dx) + turn, cw, "out", vert, depth + 1))
                    w *= rng.uniform(0.82, 0.95)
    return trees


def _draw_segments(size: int, segs, blur: float) -> np.ndarray:
    """Rasterises segments into a float32 [0, 1] coverage map (sub-pixel widths drawn 1 px wide, fainter)."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1, w in segs:
        width = max(1, round(w))
        fill = int(255 * min(1.0, w))
        draw.line((x0, y0, x1, y1), fill=fill, width=width)
        if width >= 3:  # round joints, or wide lines show notches between segments
            r = w / 2
            draw.ellipse((x1 - r, y1 - r, x1 + r, y1 + r), fill=fill)
    if blur > 0:
        canvas = canvas.filter(ImageFilter.BoxBlur(blur))
    return np.asarray(canvas, dtype=np.float32) * (1.0 / 255.0)


# ----------------------------------------------------------------------------------------------------------------
# Lesions. Each draws into `img` (float32 HxWx3, before illumination) and returns its box, or None if nothing showed.

_RED = (0.72, 0.32, 0.38)  # blood: absorbs green and blue much more than red
_DARK_RED = (0.58, 0.2, 0.25)


def _place(
    rng, eye: _Eye, extent: float, near_macula: float = 0.0, quadrant: int | None = None, vessels=None, around=None
):
    """Samples a centre for a lesion of radius `extent`; None if no free spot was found.

    near_macula: probability of sampling around the macula (posterior pole) rather than uniformly in the disc.
    around: (cy, cx, sigma): sample around this point instead (a cluster); overrides near_macula and quadrant.
    quadrant: 0-3 restricts the centre to one quadrant around the image centre (0 top-left, clockwise).
    vessels: a coverage map; centres on a vessel are rejected (small lesions must stay visible).
    """
    s = eye.size
    for _ in range(60):
        if around is not None:
            cy, cx = around[0] + rng.normal(0, around[2]), around[1] + rng.normal(0, around[2])
        elif quadrant is None and rng.random() < near_macula:
            cy, cx = eye.my + rng.normal(0, 0.17 * s), eye.mx + rng.normal(0, 0.17 * s)
        else:
            rad = eye.radius * 0.9 * math.sqrt(rng.uniform(0.02, 1.0))
            if quadrant is None:
                ang = rng.uniform(-math.pi, math.pi)
            else:
                ang = -math.pi + (quadrant + rng.uniform(0.08, 0.92)) * (math.pi / 2)  # 0: top-left, clockwise
            cy, cx = eye.c + rad * math.sin(ang), eye.c + rad * math.cos(ang)
        if not eye.fits(cy, cx, extent):
            continue
        if vessels is not None and vessels[int(cy), int(cx)] > 0.25:
            continue
        eye.placed.append((cy, cx, extent))
        return cy, cx
    return None


def _ma_radius(rng, s: int) -> float:
    return max(1.0, s * rng.uniform(*MA_RADIUS_FRACTION))


def _microaneurysm(rng, img, eye, vessels, around=None):
    s = eye.size
    r = _ma_radius(rng, s)
    at = _place(rng, eye, r + 2, near_macula=0.7, vessels=vessels, around=around)
    if at is None:
        return None
    y0, y1, x0, x1, yy, xx = _window(*at, r + 2, s)
    d = np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2)
    alpha = _soft_disc(d, r, edge=max(1.0, 0.5 * r)) * rng.uniform(0.65, 0.9)
    _tint(img, y0, x0, alpha, _DARK_RED)
    return _box_of(alpha, y0, x0)


def _haemorrhage(rng, img, eye, quadrant=None):
    s = eye.size
    flame = rng.random() < 0.35
    if flame:  # splinter/flame: elongated along the nerve fibres, i.e. radially from the optic disc
        length, width = s * rng.uniform(1 / 45, 1 / 22), s * rng.uniform(1 / 220, 1 / 120)
        at = _place(rng, eye, length, near_macula=0.5, quadrant=quadrant)
        if at is None:
            return None
        y0, y1, x0, x1, yy, xx = _window(*at, length + 2, s)
        ang = math.atan2(at[0] - eye.oy, at[1] - eye.ox) + rng.normal(0, 0.2)
        u = (xx - at[1]) * math.cos(ang) + (yy - at[0]) * math.sin(ang)
        v = -(xx - at[1]) * math.sin(ang) + (yy - at[0]) * math.cos(ang)
        q = (u / length) ** 2 + (v / max(width, 0.8)) ** 2
        alpha = np.clip(1.6 * (1.0 - q), 0.0, 1.0) * rng.uniform(0.7, 0.9)
    else:  # dot-blot: a union of a few overlapping discs, blotchy
        r = s * rng.uniform(1 / 130, 1 / 50)
        at = _place(rng, eye, 1.5 * r + 1, near_macula=0.5, quadrant=quadrant)
        if at is None:
            return None
        y0, y1, x0, x1, yy, xx = _window(*at, 1.5 * r + 2, s)
        alpha = np.zeros(yy.shape[0:1] + xx.shape[1:2], np.float32)
        for _ in range(rng.integers(2, 6)):
            oy, ox = np.clip(rng.normal(0, 0.35 * r, size=2), -0.6 * r, 0.6 * r)
            rr = r * rng.uniform(0.45, 0.9)
            d = np.sqrt((yy - at[0] - oy) ** 2 + (xx - at[1] - ox) ** 2)
            alpha = np.maximum(alpha, _soft_disc(d, rr, edge=max(1.0, 0.5 * rr)) * rng.uniform(0.7, 0.95))
    _tint(img, y0, x0, alpha, _RED if flame else _DARK_RED)
    return _box_of(alpha, y0, x0)


def _hard_exudates(rng, img, eye):
    s = eye.size
    spread = s * rng.uniform(1 / 45, 1 / 16)
    r_max = max(0.8, s / 170)
    at = _place(rng, eye, spread + r_max + 1, near_macula=0.85)
    if at is None:
        return None
    y0, y1, x0, x1, yy, xx = _window(*at, spread + r_max + 2, s)
    alpha = np.zeros(yy.shape[0:1] + xx.shape[1:2], np.float32)
    n = int(rng.integers(4, 16))
    if rng.random() < 0.4:  # circinate: a ring of exudates around a leaking spot
        ang = rng.uniform(0, 2 * math.pi, n)
        rad = spread * rng.uniform(0.6, 0.95, n)
    else:
        ang = rng.uniform(0, 2 * math.pi, n)
        rad = spread * np.sqrt(rng.uniform(0, 0.9, n))
    for a, rd in zip(ang, rad, strict=True):
        r = max(0.8, s * rng.uniform(1 / 500, 1 / 170))  # <= r_max
        d = np.sqrt((yy - at[0] - rd * math.sin(a)) ** 2 + (xx - at[1] - rd * math.cos(a)) ** 2)
        alpha = np.maximum(alpha, _soft_disc(d, r, edge=1.0) * rng.uniform(0.75, 0.95))
    _lerp(img, y0, x0, alpha, (1.0, 0.9, 0.42))
    return _box_of(alpha, y0, x0)


def _cotton_wool_spot(rng, img, eye, quadrant=None):
    s = eye.size
    r = s * rng.uniform(1 / 70, 1 / 32)
    # blobs: centre within 0.5 r, sigma <= 0.6 r, visible (alpha > 0) to 2.54 sigma: all within 2.03 r
    at = _place(rng, eye, 2.1 * r, near_macula=0.6, quadrant=quadrant)
    if at is None:
        return None
    y0, y1, x0, x1, yy, xx = _window(*at, 2.1 * r + 2, s)
    alpha = np.zeros(yy.shape[0:1] + xx.shape[1:2], np.float32)
    for _ in range(rng.integers(2, 5)):  # fluffy: overlapping soft blobs with a gaussian fall-off
        oy, ox = np.clip(rng.normal(0, 0.3 * r, size=2), -0.5 * r, 0.5 * r)
        sig = r * rng.uniform(0.35, 0.6)
        alpha = np.maximum(alpha, np.exp(-((yy - at[0] - oy) ** 2 + (xx - at[1] - ox) ** 2) / (2 * sig**2)))
    alpha = np.clip(alpha * 1.25 - 0.05, 0.0, 1.0) * rng.uniform(0.55, 0.8)
    _lerp(img, y0, x0, alpha, (0.97, 0.9, 0.78))
    return _box_of(alpha, y0, x0)


def _new_vessels(rng, img, eye, segs):
    """A net of fine tortuous loops, sprouting from a point on a vessel (neovascularisation elsewhere)."""
    s = eye.size
    ra = s * rng.uniform(1 / 22, 1 / 11)
    at = None
    for _ in range(20):  # prefer a spot on an existing vessel
        x, y = segs[int(rng.integers(len(segs)))][:2]
        if eye.fits(y, x, ra):
            at = (y, x)
            eye.placed.append((y, x, ra))
            break
    if at is None:
        at = _place(rng, eye, ra)
        if at is None:
            return None
    y0, y1, x0, x1, yy, xx = _window(*at, ra + 2, s)
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(s / 500))
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    for _ in range(rng.integers(4, 9)):
        cy, cx = np.asarray(at) + rng.normal(0, 0.3 * ra, size=2)
        rho = ra * rng.uniform(0.2, 0.45) * np.ones_like(t)
        for k in range(2, 6):
            rho *= 1 + rng.normal(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * math.pi))
        px = cx + rho * np.cos(t) - x0
        py = cy + rho * np.sin(t) - y0
        pts = list(zip(px.tolist(), py.tolist(), strict=True))
        draw.line(pts + pts[:1], fill=int(255 * rng.uniform(0.7, 1.0)), width=width)
    alpha = np.asarray(canvas, np.float32) * (0.85 / 255.0)
    alpha[(yy - at[0]) ** 2 + (xx - at[1]) ** 2 > (ra + 1) ** 2] = 0.0  # stay within the claimed spot
    _tint(img, y0, x0, alpha, (0.45, 0.16, 0.2))
    return _box_of(alpha, y0, x0)


def _preretinal_haemorrhage(rng, img, eye):
    """A large boat-shaped haemorrhage: a disc whose top is cut flat by the fluid level."""
    s = eye.size
    r = s * rng.uniform(1 / 15, 1 / 9)
    at = _place(rng, eye, 1.04 * r + 1)  # the soft rim reaches 0.03 r beyond r
    if at is None:
        return None
    y0, y1, x0, x1, yy, xx = _window(*at, 1.04 * r + 2, s)
    d = np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2)
    level = at[0] - r * rng.uniform(0.0, 0.55)
    alpha = _soft_disc(d, r, edge=max(1.5, 0.06 * r)) * np.clip((yy - level) / max(1.0, 0.04 * r) + 0.5, 0.0, 1.0)
    depth = np.clip((yy - level) / (at[0] + r - level), 0.0, 1.0)  # settled blood is darker at the bottom
    alpha = alpha * (0.6 + 0.35 * np.sqrt(depth))
    _tint(img, y0, x0, alpha, (0.36, 0.07, 0.1))
    return _box_of(alpha, y0, x0)


# ----------------------------------------------------------------------------------------------------------------
# Distractors: not lesions, not returned.


def _distractors(rng, img, eye, rate: float, vessels: np.ndarray) -> None:
    s = eye.size
    if rng.random() < rate:  # drusen-like: small pale-yellow fuzzy dots near the macula
        for _ in range(rng.integers(3, 15)):
            r = max(0.8, s * rng.uniform(1 / 350, 1 / 160))
            at = _place(rng, eye, 2 * r, near_macula=1.0)
            if at is None:
                continue
            y0, _, x0, _, yy, xx = _window(*at, 2 * r + 2, s)
            alpha = np.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / (2 * r**2)) * rng.uniform(0.3, 0.5)
            _lerp(img, y0, x0, alpha, (0.95, 0.78, 0.45))
    if rng.random() < rate:  # pigment dots: MA-sized dark spots, brown-grey rather than red
        for _ in range(rng.integers(1, 6)):
            r = _ma_radius(rng, s)
            at = _place(rng, eye, r + 2, vessels=vessels)
            if at is None:
                continue
            y0, _, x0, _, yy, xx = _window(*at, r + 2, s)
            alpha = _soft_disc(np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2), r) * rng.uniform(0.5, 0.8)
            _tint(img, y0, x0, alpha, (0.5, 0.45, 0.42))
    if rng.random() < rate:  # dust on the optics: large, soft, neutral-grey shadows (may overlap anything)
        for _ in range(rng.integers(1, 4)):
            r = s * rng.uniform(1 / 110, 1 / 35)
            rad, ang = eye.radius * 0.85 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
            at = (eye.c + rad * math.sin(ang), eye.c + rad * math.cos(ang))
            y0, _, x0, _, yy, xx = _window(*at, 2 * r, s)
            d = np.sqrt((yy - at[0]) ** 2 + (xx - at[1]) ** 2)
            alpha = np.clip(1.0 - (d / r) ** 2, 0.0, 1.0) * rng.uniform(0.15, 0.35)
            _tint(img, y0, x0, alpha, (0.55, 0.55, 0.55))
    if rng.random() < rate:  # light reflexes: a whitish sheen beside the vessels plus a specular spot
        sheen = np.asarray(
            Image.fromarray((vessels * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(s / 90)), np.float32
        ) * (1.0 / 255.0)
        ring = np.exp(-(((_radius_map(s) - 0.3 * s) / (0.12 * s)) ** 2))
        alpha = np.clip(sheen * 2.5 - vessels, 0.0, 1.0) * ring * rng.uniform(0.1, 0.25)
        _lerp(img, 0, 0, alpha, (0.95, 0.9, 0.85))
        rad, ang = eye.radius * rng.uniform(0.5, 0.85), rng.uniform(0, 2 * math.pi)
        at = (eye.c + rad * math.sin(ang), eye.c + rad * math.cos(ang))
        r = s * rng.uniform(1 / 80, 1 / 30)
        y0, _, x0, _, yy, xx = _window(*at, 2 * r, s)
        alpha = np.exp(-((yy - at[0]) ** 2 + (xx - at[1]) ** 2) / (2 * (r / 2) ** 2)) * rng.uniform(0.2, 0.45)
        _lerp(img, y0, x0, alpha, (1.0, 1.0, 0.95))


# ----------------------------------------------------------------------------------------------------------------
# The whole photograph


def _lesions_for_grade(rng, img, eye, grade: int, vessels, segs) -> list[tuple[Box, str]]:
    """Draws the lesions a grade calls for; returns (box, kind) for each one drawn.

    Placement is by rejection (inside the eye disc, off the optic disc, apart from other lesions), so a draw can
    fail; a lesion the grade requires is retried until one is drawn, so the rules hold for every image.
    """
    out: list[tuple[Box, str]] = []

    def draw(kind, make, count, required=False):
        drawn, tries = 0, 0
        while tries < count or (required and drawn == 0 and tries < count + 50):
            tries += 1
            box = make()
            if box is not None:
                out.append((box, kind))
                drawn += 1

    if grade == 0:
        return out
    if grade == 2:  # more than microaneurysms only: haemorrhages, exudates or both
        which = rng.choice(3)
        if which != 1:
            draw(HAEMORRHAGE, lambda: _haemorrhage(rng, img, eye), rng.integers(1, 6), required=True)
        if which != 0:
            draw(HARD_EXUDATE, lambda: _hard_exudates(rng, img, eye), rng.integers(1, 4), required=True)
    if grade == 4:  # big ones first, while there is room
        which = rng.choice(4)  # new vessels, preretinal haemorrhage, or (twice as often) both
        if which != 1:
            draw(NEW_VESSELS, lambda: _new_vessels(rng, img, eye, segs[0] + segs[1]), rng.integers(1, 3), True)
        if which != 0:
            draw(PRERETINAL_HAEMORRHAGE, lambda: _preretinal_haemorrhage(rng, img, eye), 1, required=True)
    if grade >= 3:
        for q in range(4):  # haemorrhages in every quadrant
            draw(HAEMORRHAGE, lambda q=q: _haemorrhage(rng, img, eye, quadrant=q), rng.integers(3, 7), required=True)
        draw(COTTON_WOOL_SPOT, lambda: _cotton_wool_spot(rng, img, eye), rng.integers(1, 6), required=True)
        draw(HARD_EXUDATE, lambda: _hard_exudates(rng, img, eye), rng.integers(0, 4))
    n_ma = {1: MA_COUNT_GRADE_1, 2: (3, 12), 3: (6, 20), 4: (4, 16)}[grade]
    # Microaneurysms come in clusters in the posterior pole: most around one centre near the macula.
    centre = (
        eye.my + rng.normal(0, MA_CLUSTER_OFFSET * eye.size),
        eye.mx + rng.normal(0, MA_CLUSTER_OFFSET * eye.size),
    )
    around = (*centre, MA_CLUSTER_SIGMA * eye.size)
    draw(
        MICROANEURYSM,
        lambda: _microaneurysm(rng, img, eye, vessels, around if rng.random() < MA_CLUSTERED else None),
        rng.integers(*n_ma),
        required=True,
    )
    return out


def generate_example(
    seed: int, grade: int, image_size: int, distractor_rate: float = 0.3
) -> tuple[np.ndarray, list[tuple[Box, str]]]:
    """One synthetic fundus photograph of the given grade.

    Args:
      seed: any non-negative int; everything random comes from `np.random.default_rng(seed)`.
      grade: DR grade 0-4; decides the lesions (see the module docstring).
      image_size: side of the square image in pixels.
      distractor_rate: probability, per distractor type (drusen-like dots, pigment dots, dust shadows, light
        reflexes), that the image has some; independent of the grade.

    Returns:
      (image, lesions): uint8[image_size, image_size, 3], and a list of ((y0, x0, y1, x1), kind) with boxes in
      pixels, end exclusive, tight around what was drawn.
    """
    if grade not in range(5):
        raise ValueError(f"grade must be 0-4, got {grade}")
    if image_size < 64:
        raise ValueError(f"image_size must be at least 64 px, got {image_size}")
    s = image_size
    rng = np.random.default_rng(seed)
    eye = _Eye(rng, s)
    r_map = _radius_map(s)
    rn = r_map / eye.radius

    # Background: per-patient orange/red tone, low-frequency choroidal texture.
    pigment = rng.uniform(0.55, 1.0)
    base = (
        np.array([rng.uniform(0.78, 0.95), rng.uniform(0.30, 0.46), rng.uniform(0.08, 0.2)], np.float32)
        * np.array([1.0, pigment, pigment**1.5], np.float32)
        * rng.uniform(0.8, 1.05)
    )
    tex = (
        0.06 * _smooth_noise(rng, s, 5)
        + 0.04 * _smooth_noise(rng, s, 17)
        + 0.025 * _smooth_noise(rng, s, 60)
        + 0.02 * _smooth_noise(rng, s, max(60, s // 5))  # fine grain, seen at high resolution
    )
    img = np.stack([base[c] * (1.0 + tex * (0.6 if c == 0 else 1.0)) for c in range(3)])  # planar [3, H, W]

    # Macula: darker, browner, with a faint foveal reflex.
    y0, _, x0, _, yy, xx = _window(eye.my, eye.mx, 0.25 * s, s)
    d2 = (yy - eye.my) ** 2 + (xx - eye.mx) ** 2
    sig = rng.uniform(0.06, 0.08) * s
    _tint(img, y0, x0, np.exp(-d2 / (2 * sig**2)) * rng.uniform(0.45, 0.65), (0.75, 0.5, 0.55))
    _lerp(img, y0, x0, np.exp(-d2 / (2 * (0.006 * s) ** 2)) * 0.25, (0.9, 0.75, 0.5))

    # Optic disc: slightly oval, bright yellowish rim, paler cup, peripapillary glow.
    y0, _, x0, _, yy, xx = _window(eye.oy, eye.ox, 2.5 * eye.od_r, s)
    ell = np.sqrt(((yy - eye.oy) / 1.08) ** 2 + (xx - eye.ox) ** 2)
    _lerp(img, y0, x0, np.exp(-((ell / (1.6 * eye.od_r)) ** 2)) * 0.25, (1.0, 0.6, 0.3))
    _lerp(img, y0, x0, _soft_disc(ell, eye.od_r, edge=0.12 * eye.od_r) * 0.85, (1.0, 0.78, 0.48))
    cup = np.sqrt((yy - eye.oy) ** 2 + (xx - eye.ox - 0.15 * eye.od_r * np.sign(eye.mx - eye.ox)) ** 2)
    _lerp(img, y0, x0, np.exp(-((cup / (rng.uniform(0.3, 0.5) * eye.od_r)) ** 2)) * 0.8, (1.0, 0.93, 0.78))

    # Vessels.
    arteries, veins = _grow_vessels(rng, eye)
    blur = max(0.5, s / 1500)
    art = _draw_segments(s, arteries, blur)
    ven = _draw_segments(s, veins, blur)
    for c, (a, v) in enumerate(((0.18, 0.36), (0.45, 0.66), (0.38, 0.55))):
        img[c] *= (1.0 - a * art) * (1.0 - v * ven)
    vessels = np.maximum(art, ven)

    lesions = _lesions_for_grade(rng, img, eye, grade, vessels, (arteries, veins))
    _distractors(rng, img, eye, distractor_rate, vessels)

    # Illumination: fall-off toward the rim, an off-centre gradient, the hard edge of the eye disc.
    ang = rng.uniform(0, 2 * math.pi)
    ax = (np.arange(s, dtype=np.float32) - eye.c) / eye.radius
    grad = rng.uniform(0.0, 0.12) * (ax[:, None] * math.sin(ang) + ax[None, :] * math.cos(ang))
    rn2 = rn * rn
    shade = 1.0 - rng.uniform(0.15, 0.3) * rn2 - rng.uniform(0.25, 0.45) * (rn2 * rn2) ** 2 + grad
    shade *= _soft_disc(r_map, eye.radius, edge=1.5) * (255.0 * rng.uniform(0.85, 1.1))
    np.clip(shade, 0.0, None, out=shade)
    # Sensor noise (uniform, same in all channels), only inside the eye disc; then soft optics.
    noise = (rng.random((s, s), dtype=np.float32) - 0.5) * (rng.uniform(3.0, 8.0) * (shade > 10.0))
    blur = max(0.4, s / 1800) * rng.uniform(0.7, 1.2)
    planes = []
    for c in range(3):
        plane = img[c] * shade + noise
        np.clip(plane, 0.0, 255.0, out=plane)
        planes.append(Image.fromarray(plane.astype(np.uint8)).filter(ImageFilter.BoxBlur(blur)))
    return np.asarray(Image.merge("RGB", planes)), lesions


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """JPEG bytes of a uint8 HxWx3 image (4:2:0 subsampling, like a camera's output)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate_encoded(seed: int, grade: int, image_size: int, distractor_rate: float, jpeg_quality: int):
    """`generate_example` followed by `encode_jpeg`: (jpeg_bytes, boxes int32[n, 4], kinds list[str]).

    Top-level so a multiprocessing pool can pickle it.
    """
    image, lesions = generate_example(seed, grade, image_size, distractor_rate)
    boxes = np.asarray([b for b, _ in lesions], np.int32).reshape(-1, 4)
    return encode_jpeg(image, jpeg_quality), boxes, [k for _, k in lesions]


def example_seed(base_seed: int, split: str, index: int) -> int:
    """The generator seed of example `index` of `split`: a hash of (base_seed, split, index), stable across runs."""
    name = list(split.encode("utf-8"))
    entropy = [base_seed, len(name), *name, index]  # the length keeps (split, index) pairs unambiguous
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
