"""Fractal rendering speed (images/s, one thread) and a contact sheet of categories x instances.

    OMP_NUM_THREADS=1 .venv/bin/python bench/fractal_render.py --images 1000 --size 128 \
        --sheet /tmp/fractal_sheet.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from pmgflow.data.fractal import render_fractal_set
from pmgflow.spec.data import FractalSource


def contact_sheet(categories: int, instances: int, size: int, seed: int) -> np.ndarray:
    """One row per category, one column per instance, 2-pixel grey gutters."""
    spec = FractalSource(categories=categories, images=categories * instances, size=size, seed=seed)
    images, _ = render_fractal_set(spec)
    sheet = np.full((categories * (size + 2), instances * (size + 2), 3), 128, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, instances)
        sheet[r * (size + 2) : r * (size + 2) + size, c * (size + 2) : c * (size + 2) + size] = image
    return sheet


def main() -> None:
    """Time render_fractal_set and print images/s; optionally save a contact sheet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sheet", default=None, help="PNG path for an 8 categories x 4 instances sheet")
    args = parser.parse_args()

    spec = FractalSource(categories=args.categories, images=args.images, size=args.size, seed=args.seed)
    start = time.perf_counter()
    images, _ = render_fractal_set(spec)
    seconds = time.perf_counter() - start
    print(
        f"{len(images)} images, {args.categories} categories, {args.size}x{args.size}: "
        f"{seconds:.1f} s, {len(images) / seconds:.0f} images/s"
    )
    if args.sheet:
        Image.fromarray(contact_sheet(8, 4, args.size, args.seed)).save(args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
