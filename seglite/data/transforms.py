"""Training and validation augmentation with albumentations (images bilinear, labels nearest)."""

from __future__ import annotations

import albumentations as A
import cv2

from seglite.data.labels import IGNORE_INDEX


def train_transform(
    crop: tuple[int, int],
    scale_range: tuple[float, float],
    flip: bool = True,
    color_jitter: float = 0.4,
    soft_targets: bool = False,
) -> A.Compose:
    """Random scale, pad with ignore, random crop (W, H), horizontal flip, colour jitter. `soft_targets`: a `coords`
    mask moves with the image too (seglite.data.dataset gathers a teacher's logits at it)."""
    width, height = crop
    steps = [
        A.RandomScale(
            scale_limit=(scale_range[0] - 1.0, scale_range[1] - 1.0),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            p=1.0,
        ),
        A.PadIfNeeded(
            min_height=height, min_width=width, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX
        ),
        A.RandomCrop(height=height, width=width),
    ]
    if flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        strength = (1.0 - color_jitter, 1.0 + color_jitter)
        steps.append(
            A.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=(-0.05, 0.05), p=0.5)
        )
    return A.Compose(steps, additional_targets={"coords": "mask"} if soft_targets else None)
