"""Seeded synthetic image folders, as a user would bring them: one folder per class of PNG/JPEG
files of mixed sizes, aspect ratios and modes (grey, RGB, RGBA, palette, 16-bit grey)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("disc", "hstripes", "vstripes")


def pattern(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width) floats in [0, 1]: a bright centred disc, or four horizontal or vertical
    stripes across the centred square (what survives the centre crop), plus a little noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    side = min(height, width)
    cy, cx = (height - 1) / 2, (width - 1) / 2
    if kind == "disc":
        image = ((yy - cy) ** 2 + (xx - cx) ** 2 <= (side / 3) ** 2).astype(float)
    else:
        along = (yy - (height - side) / 2) if kind == "hstripes" else (xx - (width - side) / 2)
        image = (np.floor(along / (side / 8)) % 2 == 0).astype(float)
    return np.clip(0.1 + 0.8 * image + rng.normal(0, 0.05, image.shape), 0, 1)


def save_as(grey: np.ndarray, path: Path, style: int) -> Path:
    """One image in one of five encodings; the file name's suffix follows the format."""
    pixels = np.rint(grey * 255).astype(np.uint8)
    rgb = np.stack([pixels, pixels, pixels], axis=-1)
    if style == 0:
        Image.fromarray(pixels, "L").save(path.with_suffix(".png"))
    elif style == 1:
        Image.fromarray(rgb, "RGB").save(path.with_suffix(".jpg"), quality=95)
    elif style == 2:
        Image.fromarray(np.dstack([rgb, np.full(pixels.shape, 255, np.uint8)]), "RGBA").save(path.with_suffix(".png"))
    elif style == 3:
        Image.fromarray(rgb, "RGB").convert("P").save(path.with_suffix(".png"))
    else:
        Image.fromarray(pixels.astype(np.uint16) * 257).save(path.with_suffix(".png"))  # 16-bit grey
    return path.with_suffix(".jpg" if style == 1 else ".png")


def write_image_folder(root: Path, per_class: int = 60, seed: int = 0, classes=CLASSES) -> Path:
    """root/<class>/<0000>.png|.jpg, sizes 12–64 pixels a side, any aspect ratio."""
    rng = np.random.default_rng(seed)
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            height, width = (int(v) for v in rng.integers(12, 65, size=2))
            save_as(pattern(kind if kind in CLASSES else CLASSES[0], height, width, rng), root / kind / f"{i:04d}",
                    i % 5)
    return root
