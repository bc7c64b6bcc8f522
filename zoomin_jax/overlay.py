"""Pictures of what Zoom-in-Net looked at, as in the paper's figure: the photograph with the map the boxes were
chosen on as a heat overlay and the boxes drawn (ranked), the attention maps of the lesion levels the boxes are
chosen on, and the zoomed patches C-Net saw. Plain numpy + PIL.

Each map value belongs at its cell's receptive-field centre (`models.zoom_in.cell_centres`, the same centres the
boxes use), so the heat image is the maps' separable linear interpolation between those centres, held constant
beyond the outermost ones (`heat_image`): a cell's peak lands on the pixels the cell looks at, not on an even
spread of the map over the image. Heat is drawn on the photograph's field of view only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

BOX_COLOURS = ((0, 255, 255), (0, 255, 0), (255, 0, 255), (255, 255, 0), (255, 128, 0), (128, 128, 255))


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


def _hot(x: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB uint8: black, red, yellow, white (the "hot" colour map)."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    rgb = np.clip(np.concatenate([3 * x, 3 * x - 1, 3 * x - 2], axis=-1), 0, 1)
    return (255 * rgb).astype(np.uint8)


def blend(image: np.ndarray, heat: np.ndarray, strength: float = 0.6, where: np.ndarray | None = None) -> np.ndarray:
    """The image with `heat` (any range; scaled to its own min..max over `where`) laid over it: strong where heat is
    high; none outside `where` (bool (S, S), e.g. the field of view) when given."""
    inside = heat if where is None or not where.any() else heat[where]
    lo, hi = float(inside.min()), float(inside.max())
    x = np.clip((heat - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(heat)
    if where is not None:
        x = np.where(where, x, 0.0)
    a = (strength * x)[..., None]
    return np.clip((1 - a) * image + a * _hot(x), 0, 255).astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, width: int = 2) -> Image.Image:
    """Boxes (y0, x0, y1, x1), end exclusive, drawn in rank colours with their rank (1 = chosen first)."""
    im = Image.fromarray(image)
    d = ImageDraw.Draw(im)
    for k, (y0, x0, y1, x1) in enumerate(np.asarray(boxes).tolist()):
        colour = BOX_COLOURS[k % len(BOX_COLOURS)]
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=colour, width=width)
        d.text((x0 + 3, y0 + 2), str(k + 1), fill=colour)
    return im


def picture(display: np.ndarray, region_map: np.ndarray, attention: np.ndarray, boxes: np.ndarray,
            centres: tuple, title: str, map_name: str, fov: np.ndarray | None = None,
            levels: tuple[int, ...] | None = None) -> Image.Image:
    """One photograph's figure.

    Args:
      display: uint8 (S, S, 3) the prepared photograph as a person would look at it (before Graham).
      region_map: (h, w) the map the boxes were chosen on (the lesion levels reduced as the model does).
      attention: (h, w, L) attention of the L lesion levels the boxes were chosen on.
      boxes: int (N, 4) boxes in the prepared image's pixels, best first.
      centres: the cells' (row, column) centres in the prepared image's pixels.
      title: a line of text on top (grade, probabilities).
      map_name: what `region_map` is ("gated" or "attention").
      fov: optional bool (S, S) field of view: heat is shown (and scaled) on the retina only, so weight parked in
        the black surround does not paint streaks there.
      levels: the grades of `attention`'s L maps (`config.model.regions.levels`), for the labels; None: 1..L.
    """
    s = display.shape[0]
    grades = tuple(levels) if levels is not None else tuple(range(1, attention.shape[-1] + 1))
    named = ", ".join(str(g) for g in grades)
    half = s // 2
    main = draw_boxes(blend(display, heat_image(region_map, centres, s), where=fov), boxes)
    levels = [Image.fromarray(blend(display, heat_image(attention[..., i], centres, s), where=fov)).resize((half, half))
              for i in range(attention.shape[-1])]
    patches = [Image.fromarray(display[y0:y1, x0:x1]).resize((half, half), Image.LANCZOS)
               for y0, x0, y1, x1 in np.asarray(boxes).tolist()]
    cols = max(len(levels), len(patches), 2)
    width, top = max(s + half * 2, half * cols), 18
    canvas = Image.new("RGB", (width, top + s + 2 * (half + 14)), (20, 20, 20))
    d = ImageDraw.Draw(canvas)
    d.text((4, 3), title, fill=(255, 255, 255))
    canvas.paste(main, (0, top))
    d.text((s + 6, top + 2), f"boxes on the {map_name} map (levels {named}), ranked 1..{len(patches)}",
           fill=(230, 230, 230))
    y = top + s
    d.text((4, y + 1), f"attention of lesion levels {named}",
           fill=(230, 230, 230))
    for i, im in enumerate(levels):
        canvas.paste(im, (i * half, y + 14))
    y += half + 14
    d.text((4, y + 1), "zoomed patches C-Net saw, in rank order", fill=(230, 230, 230))
    for i, im in enumerate(patches):
        canvas.paste(im, (i * half, y + 14))
        ImageDraw.Draw(canvas).rectangle([i * half, y + 14, (i + 1) * half - 1, y + 13 + half],
                                         outline=BOX_COLOURS[i % len(BOX_COLOURS)], width=2)
    return canvas
