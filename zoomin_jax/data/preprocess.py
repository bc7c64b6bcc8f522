"""Turns one fundus photograph from a user's download into the stored square image, and says when it cannot.

The steps, each a plain function so tests and notebooks can call them alone:

1. `decode_photo` reads the file and rejects what is not a usable colour photograph (corrupt or truncated file,
   grayscale, CMYK, palette, too small) with a `BadPhoto` whose `reason` the builders count in their skip totals.
   JPEGs can be decoded at a reduced scale (PIL "draft" mode, DCT scaling), several times faster for a small target.
2. `crop_to_disc` finds the circular eye disc (robust to black borders, vignetting, an off-centre eye and a disc cut
   off at the top and bottom, as in many EyePACS photographs) and cuts the square around it, padding with black
   where the square leaves the photo. It returns the `CropTransform`, which maps lesion boxes drawn on the original
   photo (or on a mask of another resolution) into the stored image.
3. `resize` to the stored size, then optionally `graham` (Ben Graham's local-contrast normalisation).
4. `encode_jpeg` for the `image` feature.

`disc_square` chains 1-2 and the resize; `data/photo.py` adds the field of view and Graham: the one preparation
the builders and `--mode=predict` share.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
from PIL import Image, ImageFile, ImageFilter, UnidentifiedImageError
from scipy import ndimage

PhotoSource = str | os.PathLike | bytes

# Working resolution (longest side) of the disc search; the error of the found circle is about one working pixel.
_DISC_SEARCH_SIDE = 512
_GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class BadPhoto(ValueError):
    """A photograph that cannot be used; `reason` is a short key the builders count (e.g. "truncated")."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def decode_photo(source: PhotoSource, *, min_side: int = 256, draft_size: int | None = None) -> np.ndarray:
    """Decodes a colour fundus photograph, rejecting unusable files.

    Args:
      source: a file path or the encoded bytes (JPEG, TIFF, PNG, anything PIL reads).
      min_side: photographs whose shorter side (at full resolution) is below this are rejected as "too_small".
      draft_size: if given and the file is a JPEG, decode at the smallest DCT scale (1/2, 1/4, 1/8) whose result is
        still at least `draft_size` pixels on both sides. Callers that need full-resolution coordinates (masks,
        boxes) compare the returned shape with the mask's or the photo's full size.

    Returns:
      uint8 array (H, W, 3), RGB.

    Raises:
      BadPhoto: reason one of "corrupt", "truncated", "grayscale", "cmyk", "palette", "unsupported_mode",
        "too_small".
      RuntimeError: if `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` was switched on, which would silently turn truncated
        files into half-grey photographs with a valid label.
    """
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True in this process; truncated photographs would be stored "
            "half grey. Set it back to False before preparing a dataset."
        )
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        im = Image.open(fp)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise BadPhoto("corrupt", str(e)) from e
    with im:
        mode = im.mode
        if mode in _GRAY_MODES:
            raise BadPhoto("grayscale", f"mode {mode}")
        if mode == "CMYK":
            raise BadPhoto("cmyk", "CMYK photograph")
        if mode in ("P", "PA"):
            raise BadPhoto("palette", "palette (indexed-colour) image")
        if mode not in ("RGB", "RGBA", "RGBX", "YCbCr"):
            raise BadPhoto("unsupported_mode", f"mode {mode}")
        if min(im.size) < min_side:
            raise BadPhoto("too_small", f"{im.size[0]}x{im.size[1]} < {min_side}")
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (draft_size, draft_size))
        try:
            im.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            reason = "truncated" if "truncated" in str(e) else "corrupt"
            raise BadPhoto(reason, str(e)) from e
        rgb = np.asarray(im.convert("RGB"))
    # A grey picture saved as RGB: fundus photographs are strongly red, so equal channels mean no colour at all.
    sample = rgb[::7, ::7].astype(np.int16)
    if np.abs(sample[..., 0] - sample[..., 1]).max() <= 2 and np.abs(sample[..., 1] - sample[..., 2]).max() <= 2:
        raise BadPhoto("grayscale", "RGB photograph without colour")
    return rgb


@dataclasses.dataclass(frozen=True)
class CropTransform:
    """The square cut out of a photo frame: rows y0..y0+side, columns x0..x0+side (may extend past the frame).

    Attributes:
      y0, x0: top-left corner of the square in the frame's pixels (negative where the square starts above/left).
      side: side of the square in the frame's pixels.
      frame_hw: (height, width) of the frame the square was found in (the decoded photo).
    """

    y0: int
    x0: int
    side: int
    frame_hw: tuple[int, int]

    def map_boxes(
        self, boxes: np.ndarray, size: int, boxes_frame_hw: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps boxes from a photo (or mask) frame into the stored `size` x `size` image.

        Args:
          boxes: int (N, 4) boxes (y0, x0, y1, x1), end exclusive, in pixels of `boxes_frame_hw`.
          size: side of the stored image.
          boxes_frame_hw: (height, width) of the frame the boxes are in, e.g. a full-resolution mask when the
            photo was decoded at a reduced scale; default the crop's own frame.

        Returns:
          (mapped int32 (M, 4), keep bool (N,)): the boxes that still overlap the stored image, clipped to it, each at
          least one pixel on a side; `keep` marks which inputs they are.
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        fh, fw = boxes_frame_hw or self.frame_hw
        sy, sx = self.frame_hw[0] / fh, self.frame_hw[1] / fw
        scale = size / self.side
        y0 = (boxes[:, 0] * sy - self.y0) * scale
        x0 = (boxes[:, 1] * sx - self.x0) * scale
        y1 = (boxes[:, 2] * sy - self.y0) * scale
        x1 = (boxes[:, 3] * sx - self.x0) * scale
        out = np.stack([np.floor(y0), np.floor(x0), np.ceil(y1), np.ceil(x1)], axis=1)
        out = np.clip(out, 0, size)
        keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
        # A lesion smaller than one stored pixel still covers the pixel it falls in.
        out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
        out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
        out = np.clip(out, 0, size)
        return out[keep].astype(np.int32), keep


def find_disc(image: np.ndarray) -> tuple[float, float, float]:
    """Finds the eye disc of a fundus photograph.

    Brightness is the larger of the red and green channels (the disc is red; green carries the vessels),
    blurred, on a copy at most `_DISC_SEARCH_SIDE` pixels wide. The threshold sits 10 % of the way from the
    background level (10th percentile of the photo's outer ring, i.e. the black border) to the bright level
    (99th percentile), so dark vignetted rims stay inside the disc while JPEG noise in the border stays out.
    The largest connected bright region, holes filled, is the disc. Its circle is a least-squares (Kasa) fit to the
    region's edge points that do not lie on the photo's border: a disc cut off at the top and bottom keeps its true
    left and right arcs, so the fit recovers the full circle. Edge points far off the first fit (a camera's notch
    or tab) are dropped and the circle refitted.

    Args:
      image: uint8 (H, W, 3).

    Returns:
      (centre_y, centre_x, radius) in the image's pixels.

    Raises:
      BadPhoto("no_disc"): no bright region stands out from the background.
    """
    h, w = image.shape[:2]
    f = min(1.0, _DISC_SEARCH_SIDE / max(h, w))
    small = Image.fromarray(image)
    if f < 1.0:
        small = small.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX)
    rg = np.asarray(small)[..., :2].max(axis=-1).astype(np.float32)
    rg = ndimage.gaussian_filter(rg, 1.0)
    sh, sw = rg.shape
    ring = np.concatenate([rg[0], rg[-1], rg[:, 0], rg[:, -1]])
    bg = float(np.percentile(ring, 10))
    hi = float(np.percentile(rg, 99))
    if hi - bg < 20:
        raise BadPhoto("no_disc", f"no bright disc (background {bg:.0f}, bright {hi:.0f})")
    mask = rg > bg + 0.1 * (hi - bg)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise BadPhoto("no_disc", "no bright region")
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    disc = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    if disc.sum() < 0.02 * sh * sw:
        raise BadPhoto("no_disc", "bright region too small to be an eye disc")

    edge = disc & ~ndimage.binary_erosion(disc)
    ys, xs = np.nonzero(edge)
    inner = (ys > 1) & (ys < sh - 2) & (xs > 1) & (xs < sw - 2)
    ys, xs = ys[inner].astype(np.float64), xs[inner].astype(np.float64)
    rows, cols = np.nonzero(disc.any(axis=1))[0], np.nonzero(disc.any(axis=0))[0]
    bbox_r = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / 2
    fit = None
    for _ in range(2):
        if len(ys) < 20:
            break
        a = np.stack([xs, ys, np.ones_like(xs)], axis=1)
        sol, *_ = np.linalg.lstsq(a, -(xs**2 + ys**2), rcond=None)
        cx, cy = -sol[0] / 2, -sol[1] / 2
        r2 = cx**2 + cy**2 - sol[2]
        if r2 <= 0:
            break
        fit = (cy, cx, np.sqrt(r2))
        resid = np.abs(np.hypot(ys - cy, xs - cx) - fit[2])
        good = resid <= max(2.0, 3 * np.median(resid))
        ys, xs = ys[good], xs[good]
    if fit is None or not 0.7 * bbox_r <= fit[2] <= 1.5 * bbox_r:
        # Too few free edge points (a disc filling the whole photo): the bounding box is the best guess.
        fit = ((rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2, bbox_r)
    cy, cx, r = fit
    # Pixel centres are at +0.5. The low threshold on the blurred rim puts the edge pixels about half a pixel
    # outside the true boundary, which cancels the half pixel they would otherwise sit inside it (measured: the
    # radius of synthetic discs comes out within 0.5 px).
    return (cy + 0.5) * h / sh, (cx + 0.5) * w / sw, r * w / sw


def crop_to_disc(image: np.ndarray, margin: float = 1.0) -> tuple[np.ndarray, CropTransform]:
    """Cuts the square around the eye disc, padding with black where it leaves the photo.

    Args:
      image: uint8 (H, W, 3).
      margin: side of the square over the disc diameter (1.0: the disc touches all four sides).

    Returns:
      (square uint8 image, CropTransform from `image`'s pixels to the square's).

    Raises:
      BadPhoto("no_disc"): see `find_disc`.
    """
    cy, cx, r = find_disc(image)
    side = max(1, int(round(2 * r * margin)))
    t = CropTransform(y0=int(round(cy - side / 2)), x0=int(round(cx - side / 2)), side=side,
                      frame_hw=image.shape[:2])
    return apply_crop(image, t), t


def apply_crop(image: np.ndarray, t: CropTransform) -> np.ndarray:
    """Cuts `t`'s square out of `image` (in `t.frame_hw` pixels), black where the square leaves the image."""
    h, w = image.shape[:2]
    out = np.zeros((t.side, t.side, *image.shape[2:]), image.dtype)
    sy0, sx0 = max(t.y0, 0), max(t.x0, 0)
    sy1, sx1 = min(t.y0 + t.side, h), min(t.x0 + t.side, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - t.y0 : sy1 - t.y0, sx0 - t.x0 : sx1 - t.x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resizes a square uint8 image to `size` x `size` with PIL's Lanczos filter (area-averaging when shrinking)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS, reducing_gap=3.0))


def graham(image: np.ndarray, scale: float | None = None, outside: int = 128) -> np.ndarray:
    """Ben Graham's normalisation (Kaggle DR 2015 winner): 4*img - 4*GaussianBlur(img, scale/30) + 128, in a circle.

    Subtracting the local mean removes illumination and camera colour differences and leaves lesions and vessels
    as deviations from mid-grey. As in Graham's code, `scale` is the disc radius and the result is kept only inside a
    circle of 90 % of it; outside it is set to `outside`, 128 by default (Graham's choice: mid-grey, the value a
    featureless region takes, so the rim is not a strong edge; pass 0 for black).

    Args:
      image: uint8 (S, S, 3), disc-centred (as `crop_to_disc` leaves it).
      scale: disc radius in pixels; default S/2 (the disc fills the square).
      outside: value outside the circle.

    Returns:
      uint8 (S, S, 3).
    """
    h, w = image.shape[:2]
    scale = scale or min(h, w) / 2
    # PIL's GaussianBlur radius is the standard deviation; it runs in C without the GIL (builders use threads).
    blur = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(scale / 30)), np.float32)
    out = 4.0 * image.astype(np.float32) - 4.0 * blur + 128.0
    out = np.where(graham_inside(h, w, scale)[..., None], out, float(outside))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def graham_inside(h: int, w: int, scale: float | None = None) -> np.ndarray:
    """bool (h, w): the pixels `graham` keeps (centre within 90 % of `scale`, default min(h, w) / 2, of the centre);
    the rest it overwrites, so they show no retina in a Graham-normalised image."""
    scale = scale or min(h, w) / 2
    yy, xx = np.ogrid[:h, :w]
    return (yy + 0.5 - h / 2) ** 2 + (xx + 0.5 - w / 2) ** 2 <= (0.9 * scale) ** 2


def disc_square(source: PhotoSource, image_size: int, *, min_side: int = 256) -> tuple[np.ndarray, CropTransform]:
    """decode -> crop to the disc -> resize (`data/photo.py` adds the field of view and Graham: the one
    preparation the builders and predict share)."""
    # The disc spans about the photo's shorter side; 25 % headroom keeps the final resize a reduction.
    photo = decode_photo(source, min_side=min_side, draft_size=int(image_size * 1.25))
    square, transform = crop_to_disc(photo)
    return resize(square, image_size), transform


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a uint8 RGB image, for the `image` feature."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def photo_size(source: PhotoSource) -> tuple[int, int]:
    """(height, width) of a photograph at full resolution, from its header only."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
        return im.size[1], im.size[0]


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Boxes of the connected lesions (8-connectivity) of a pixel mask.

    Args:
      mask: (H, W) or (H, W, C) array; a pixel is lesion where it exceeds half the mask's maximum (masks come as
        0/255, 0/1 or coloured).

    Returns:
      int32 (N, 4) boxes (y0, x0, y1, x1), end exclusive, in the mask's pixels, in label order.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m.max(axis=-1)
    top = m.max() if m.size else 0
    if top <= 0:
        return np.zeros((0, 4), np.int32)
    labels, _ = ndimage.label(m > top / 2, structure=np.ones((3, 3), bool))
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in ndimage.find_objects(labels) if s is not None]
    return np.asarray(boxes, np.int32).reshape(-1, 4)
