"""Classify digit images with a trained model:
`python -m tune_mnist.predict --model results/<name>/best img1.png img2.png`.

Images of any size are turned grey, resized to 28x28 and, if they are dark-on-light (as a
scan or a drawing usually is), inverted to MNIST's light-on-dark.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tune_mnist.parser import Parser
from tune_mnist.train.data import normalize
from tune_mnist.train.modelfile import load_model


def read_image(path: str | Path) -> torch.Tensor:
    """A (28, 28) uint8 tensor, white digit on black, from any image file PIL can read."""
    from PIL import Image, UnidentifiedImageError  # lazy: Pillow loads only to read an image

    try:
        with Image.open(path) as opened:
            image = opened.convert("L")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc.__class__.__name__})") from None
    if image.size != (28, 28):
        image = image.resize((28, 28), Image.Resampling.BILINEAR)
    pixels = torch.tensor(np.asarray(image), dtype=torch.uint8).view(28, 28)
    if pixels.float().mean() > 127:  # dark digit on a light background
        pixels = 255 - pixels
    return pixels


def predict(model: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and confidences (softmax probability) for uint8 images (N, 28, 28)."""
    with torch.inference_mode():
        probs = F.softmax(model(normalize(images)), dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m tune_mnist.predict", description=__doc__)
    parser.add_argument(
        "--model",
        required=True,
        help="model file or folder, results/<name>/confirmed/<trial> (required)",
    )
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model)
        batch = torch.stack([read_image(p) for p in args.images])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels, confidence = predict(model, batch)
    for path, label, conf in zip(args.images, labels.tolist(), confidence.tolist(), strict=True):
        print(f"{path}: {label} ({conf * 100:.1f}%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
