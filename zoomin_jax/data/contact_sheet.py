"""A contact sheet of fundus examples: one row per grade, lesion boxes coloured by kind, a legend underneath.

For looking at data, synthetic or real: `contact_sheet(examples)` takes generator output or records read back from
a prepared dataset. Run as a module it draws straight from the synthetic generator, no preparation needed:

  python -m zoomin_jax.data.contact_sheet --out sheet.png --image_size 1230 --per_grade 3 --tile 320

docs/contact_sheet.png is `--image_size 1230 --tile 176 --palette`.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zoomin_jax.data import synthetic
from zoomin_jax.lesions import LESION_KINDS

KIND_NAMES = LESION_KINDS
KIND_COLOURS = {
    "microaneurysm": (0, 255, 255),
    "haemorrhage": (40, 90, 255),
    "hard_exudate": (255, 255, 0),
    "cotton_wool_spot": (255, 255, 255),
    "new_vessels": (0, 255, 80),
    "preretinal_haemorrhage": (255, 0, 255),
}
GRADE_NAMES = ("0 none", "1 mild", "2 moderate", "3 severe", "4 proliferative")


def _as_image(image) -> Image.Image:
    if isinstance(image, bytes | np.bytes_):
        return Image.open(io.BytesIO(bytes(image))).convert("RGB")
    return Image.fromarray(np.asarray(image, np.uint8))


def _as_lesions(lesions) -> list[tuple[Sequence[int], str]]:
    """(box, kind-name) pairs from generator output (a list of pairs) or a dataset record ({'box', 'kind'})."""
    if isinstance(lesions, Mapping):
        boxes = np.asarray(lesions["box"]).reshape(-1, 4)
        kinds = [KIND_NAMES[int(k)] if not isinstance(k, str | bytes) else str(k) for k in lesions["kind"]]
        return list(zip(boxes.tolist(), kinds, strict=True))
    return [(tuple(b), str(k)) for b, k in lesions]


def contact_sheet(
    examples: Iterable[Mapping],
    per_grade: int = 3,
    tile: int = 256,
    draw_boxes: bool = True,
) -> Image.Image:
    """Draws a grid of examples, rows = grades 0-4, with lesion boxes and a legend.

    Args:
      examples: mappings with `image` (uint8 HxWx3 array or JPEG bytes), `label` (grade 0-4) and `lesions` (a list
        of (box, kind) as `synthetic.generate_example` returns, or a record's {'box': [n, 4], 'kind': [n]}). The
        first `per_grade` examples of each grade are used; a grade with fewer leaves empty cells.
      per_grade: columns.
      tile: side of each cell in pixels; images are resized to it, boxes scaled with them.
      draw_boxes: outline each lesion box (grown by one pixel so single-pixel lesions stay visible).

    Returns:
      An RGB PIL image.
    """
    rows: list[list[Mapping]] = [[] for _ in range(5)]
    for ex in examples:
        g = int(ex["label"])
        if len(rows[g]) < per_grade:
            rows[g].append(ex)
    font = ImageFont.load_default()
    label_w, gap, legend_h = 96, 4, 44
    width = label_w + per_grade * (tile + gap)
    sheet = Image.new("RGB", (width, 5 * (tile + gap) + legend_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for g, row in enumerate(rows):
        top = g * (tile + gap)
        draw.text((6, top + tile // 2 - 12), f"grade {GRADE_NAMES[g]}", fill=(230, 230, 230), font=font)
        for k, ex in enumerate(row):
            img = _as_image(ex["image"])
            scale = tile / img.width
            left = label_w + k * (tile + gap)
            sheet.paste(img.resize((tile, tile), Image.LANCZOS), (left, top))
            lesions = _as_lesions(ex["lesions"])
            if draw_boxes:
                for (y0, x0, y1, x1), kind in lesions:
                    draw.rectangle(
                        (left + x0 * scale - 1, top + y0 * scale - 1, left + x1 * scale, top + y1 * scale),
                        outline=KIND_COLOURS.get(kind, (255, 128, 0)),
                    )
            draw.text((left + 4, top + 2), f"{len(lesions)} lesions", fill=(230, 230, 230), font=font)
    # Legend.
    y, x = 5 * (tile + gap) + 8, 6
    for kind in KIND_NAMES:
        w = int(draw.textlength(kind, font=font)) + 26
        if x + w > width:
            x, y = 6, y + 16
        draw.rectangle((x, y + 2, x + 12, y + 12), outline=KIND_COLOURS[kind], width=2)
        draw.text((x + 16, y), kind, fill=(230, 230, 230), font=font)
        x += w
    return sheet


def synthetic_examples(image_size: int, per_grade: int, seed: int = 0, distractor_rate: float = 0.3) -> list[dict]:
    """`per_grade` generator examples of each grade (seeds from `synthetic.example_seed(seed, 'sheet<g>', k)`)."""
    out = []
    for g in range(5):
        for k in range(per_grade):
            image, lesions = synthetic.generate_example(
                synthetic.example_seed(seed, f"sheet{g}", k), g, image_size, distractor_rate
            )
            out.append({"image": image, "label": g, "lesions": lesions})
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="PNG (or JPEG) file to write")
    parser.add_argument("--image_size", type=int, default=400, help="generated image side in pixels")
    parser.add_argument("--per_grade", type=int, default=3)
    parser.add_argument("--tile", type=int, default=256, help="cell side in the sheet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--distractor_rate", type=float, default=0.3)
    parser.add_argument("--no_boxes", action="store_true", help="leave the lesion boxes out")
    parser.add_argument("--palette", action="store_true", help="256-colour PNG: about 4x smaller (for docs)")
    args = parser.parse_args(argv)
    examples = synthetic_examples(args.image_size, args.per_grade, args.seed, args.distractor_rate)
    sheet = contact_sheet(examples, args.per_grade, args.tile, draw_boxes=not args.no_boxes)
    if args.palette:  # octree keeps the few saturated box colours exact; the fundus bands a little
        sheet = sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    sheet.save(args.out, optimize=args.palette)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
