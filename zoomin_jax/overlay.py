"""Pictures a grader can read: where Zoom-in-Net looked, and the lesion under each box at the photograph's own
resolution.

One picture per photograph (JPEG), top to bottom:
- the clean photograph and the same photograph under the map the boxes were chosen on, side by side at the same
  size, the ranked boxes drawn on both, and a colour bar with the map's values;
- the zoomed patches, cut from the ORIGINAL photograph at its own resolution (the boxes mapped back through the
  inverse of the disc crop, as the CSV's boxes are) and shown at `PANEL` px, so a lesion a few original pixels
  wide is visible; each framed in its box's colour and numbered by rank;
- the attention of each lesion level the boxes are chosen on, small, on its own fixed scale.

The colour map is matplotlib's perceptual `viridis` (blue - green - yellow: no fundus or lesion colour), laid over
the photograph with an opacity that grows with the value, so low values leave the retina visible and a hot spot is
not mistaken for an exudate. The scale is fixed for a run (`Scale`, from the first batch; predict keeps it for a
resumed run), so a flat map looks flat; its range is printed on the bar.

Each map value belongs at its cell's receptive-field centre (`models.zoom_in.cell_centres`, the same centres the
boxes use), so the heat image is the maps' separable linear interpolation between those centres, held constant
beyond the outermost ones (`heat_image`): a cell's peak lands on the pixels the cell looks at. Heat is drawn on the
photograph's field of view only. Fonts: Pillow's scalable default font at `FONT_PX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BOX_COLOURS = ((255, 255, 255), (0, 255, 255), (255, 0, 255), (255, 160, 0), (160, 255, 0), (255, 80, 80))
PANEL = 512  # side of the photograph panels and of each patch, in pixels of the picture
FONT_PX = 18
BAR = 84  # width of the colour bar with its labels
OPACITY = 0.85  # of the colour at the top of the scale (0 at the bottom: the retina shows through)
_LUT: np.ndarray | None = None


class Scale(NamedTuple):
    """A map's colour scale, fixed for a run: values at or below `lo` are transparent, at or above `hi` full."""

    lo: float
    hi: float

    @classmethod
    def of(cls, maps: np.ndarray, where: np.ndarray | None = None) -> Scale:
        """From a first batch: the 1st and 99th percentiles of the maps' values (on the field of view)."""
        v = np.asarray(maps, np.float64)
        v = v[where] if where is not None and where.any() else v.reshape(-1)
        lo, hi = (float(x) for x in np.percentile(v, [1, 99]))
        return cls(lo, hi if hi > lo else lo + 1e-6)


def _lut() -> np.ndarray:
    """uint8 (256, 3): matplotlib's viridis."""
    global _LUT
    if _LUT is None:
        from matplotlib import colormaps

        _LUT = (255 * colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]).round().astype(np.uint8)
    return _LUT


def font(px: int = FONT_PX) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=px)


def heat_image(values: np.ndarray, centres: tuple[Sequence, Sequence], size: int) -> np.ndarray:
    """float (h, w) cell values -> float (size, size) at pixel centres, linear between the cells' centres.

    Args:
      values: one value per cell.
      centres: (row centres, column centres) in pixels of the size x size image (pixel k spans [k, k + 1)).
    """
    rows, cols = (np.asarray([float(c) for c in cs]) for cs in centres)
    px = np.arange(size) + 0.5
    v = np.asarray(values, np.float64)
    along_cols = np.stack([np.interp(px, cols, v[i]) for i in range(v.shape[0])])  # (h, size)
    return np.stack([np.interp(px, rows, along_cols[:, j]) for j in range(size)], axis=1)  # (size, size)


def blend(image: np.ndarray, heat: np.ndarray, scale: Scale, where: np.ndarray | None = None) -> np.ndarray:
    """The image under `heat` coloured on the fixed `scale`: viridis, opaque in proportion to the value (none at
    or below scale.lo), none outside `where` (bool (S, S), e.g. the field of view) when given."""
    x = np.clip((heat - scale.lo) / (scale.hi - scale.lo), 0.0, 1.0)
    if where is not None:
        x = np.where(where, x, 0.0)
    colour = _lut()[(x * 255).round().astype(np.int64)]
    a = (OPACITY * x)[..., None]
    return np.clip((1 - a) * image + a * colour, 0, 255).astype(np.uint8)


def colour_bar(scale: Scale, height: int, label: str) -> Image.Image:
    """A vertical bar of the colour map with its values (top: scale.hi) and a label."""
    bar = Image.new("RGB", (BAR, height), (20, 20, 20))
    ramp = _lut()[np.linspace(255, 0, height - 40).round().astype(np.int64)]  # (height - 40, 3), top = high
    strip = np.repeat(ramp[:, None, :], 18, axis=1)
    bar.paste(Image.fromarray(strip), (6, 20))
    d = ImageDraw.Draw(bar)
    small = font(13)
    d.text((2, 2), label, fill=(230, 230, 230), font=small)
    for frac in (0.0, 0.5, 1.0):
        y = 20 + round(frac * (height - 41))
        value = scale.hi - frac * (scale.hi - scale.lo)
        d.line([(24, y), (30, y)], fill=(230, 230, 230))
        d.text((32, y - 7), f"{value:.3g}", fill=(230, 230, 230), font=small)
    return bar


def draw_boxes(image: Image.Image, boxes: np.ndarray, scale: float = 1.0, width: int = 3) -> Image.Image:
    """Boxes (y0, x0, y1, x1), end exclusive, in rank colours with their rank (1 = chosen first), `scale` from the
    boxes' pixels to the image's."""
    d = ImageDraw.Draw(image)
    f = font()
    for k, (y0, x0, y1, x1) in enumerate((np.asarray(boxes, np.float64) * scale).round().astype(int).tolist()):
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
        d.text((x0 + 4, y0 + 2), str(k + 1), fill=colour, font=f, stroke_width=2, stroke_fill=(0, 0, 0))
    return image


def _square(patch: np.ndarray) -> np.ndarray:
    """A box clipped by the photograph's edge, padded black to a square (shown undistorted)."""
    h, w = patch.shape[:2]
    side = max(h, w, 1)
    out = np.zeros((side, side, 3), np.uint8)
    out[:h, :w] = patch
    return out


def picture(display: np.ndarray, region_map: np.ndarray, attention: np.ndarray, boxes: np.ndarray,
            centres: tuple, title: Sequence[str], map_name: str, scale: Scale, attention_scale: Scale,
            patches: Sequence[np.ndarray], fov: np.ndarray | None = None,
            levels: tuple[int, ...] | None = None) -> Image.Image:
    """One photograph's picture (module docstring).

    Args:
      display: uint8 (S, S, 3) the prepared photograph as a person would look at it (before Graham).
      region_map: (h, w) the map the boxes were chosen on (the lesion levels reduced as the model does).
      attention: (h, w, L) attention of the L lesion levels the boxes were chosen on.
      boxes: int (N, 4) boxes in the prepared image's pixels, best first.
      centres: the cells' (row, column) centres in the prepared image's pixels.
      title: lines of text on top (the decision, the grade, the file).
      map_name: what `region_map` is ("gated" or "attention").
      scale, attention_scale: the run's fixed colour scales of `region_map` and of the attention maps.
      patches: the N boxes' pixels, cut from the original photograph at its own resolution, best first.
      fov: optional bool (S, S) field of view: heat is shown on the retina only.
      levels: the grades of `attention`'s L maps (`config.model.regions.levels`), for the labels; None: 1..L.
    """
    s = display.shape[0]
    grades = tuple(levels) if levels is not None else tuple(range(1, attention.shape[-1] + 1))
    named = ", ".join(str(g) for g in grades)
    small = PANEL // 2
    f = font()
    clean = Image.fromarray(display).resize((PANEL, PANEL), Image.BILINEAR)
    heated = blend(display, heat_image(region_map, centres, s), scale, where=fov)
    heated = Image.fromarray(heated).resize((PANEL, PANEL), Image.BILINEAR)
    for im in (clean, heated):
        draw_boxes(im, boxes, PANEL / s)
    small = min(small, 2 * PANEL // max(1, attention.shape[-1]))  # every level's map on one row
    rows_of_patches = -(-len(patches) // 2)
    head = 10 + (FONT_PX + 6) * len(title)
    width = 2 * PANEL + BAR
    height = head + PANEL + (FONT_PX + 12) + rows_of_patches * PANEL + (FONT_PX + 12) + small
    canvas = Image.new("RGB", (width, height), (20, 20, 20))
    d = ImageDraw.Draw(canvas)
    for k, line in enumerate(title):
        d.text((6, 5 + k * (FONT_PX + 6)), line, fill=(255, 255, 255), font=f)
    canvas.paste(clean, (0, head))
    canvas.paste(heated, (PANEL, head))
    canvas.paste(colour_bar(scale, PANEL, map_name), (2 * PANEL, head))
    y = head + PANEL
    d.text((6, y + 6), f"the boxes' pixels in the original photograph, ranked 1..{len(patches)} (chosen on the "
           f"{map_name} map of levels {named})", fill=(230, 230, 230), font=f)
    y += FONT_PX + 12
    for k, patch in enumerate(patches):
        x0, y0 = (k % 2) * PANEL, y + (k // 2) * PANEL
        canvas.paste(Image.fromarray(_square(patch)).resize((PANEL, PANEL), Image.LANCZOS), (x0, y0))
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        d.rectangle([x0, y0, x0 + PANEL - 1, y0 + PANEL - 1], outline=colour, width=3)
        d.text((x0 + 8, y0 + 6), f"{k + 1}: {patch.shape[1]}x{patch.shape[0]} px", fill=colour, font=f,
               stroke_width=2, stroke_fill=(0, 0, 0))
    y += rows_of_patches * PANEL
    d.text((6, y + 6), f"attention of lesion levels {named} (scale 0 .. {attention_scale.hi:.3g}, fixed for the run)",
           fill=(230, 230, 230), font=f)
    y += FONT_PX + 12
    for i in range(attention.shape[-1]):
        level = blend(display, heat_image(attention[..., i], centres, s), attention_scale, where=fov)
        canvas.paste(Image.fromarray(level).resize((small, small), Image.BILINEAR), (i * small, y))
        d.text((i * small + 6, y + 4), f"level {grades[i]}", fill=(255, 255, 255), font=font(15), stroke_width=2,
               stroke_fill=(0, 0, 0))
    return canvas
