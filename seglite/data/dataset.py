"""A torch Dataset over the Cityscapes layout; labelIds become trainIds on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from seglite.data.cityscapes import Sample, find_samples, read_image, read_train_ids
from seglite.data.labels import IGNORE_INDEX, NUM_CLASSES, VALID_LABEL_IDS
from seglite.errors import DataError
from seglite.zoo.preprocess import Preprocess

_VALID_IDS = np.zeros(256, bool)
_VALID_IDS[list(VALID_LABEL_IDS)] = True


def read_checked_train_ids(sample: Sample) -> np.ndarray:
    """trainIds of a sample's label, refusing ids that are no Cityscapes class (a corrupt or foreign label)."""
    import cv2

    raw = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise DataError(f"{sample.label}: unreadable or not a single-channel label image")
    if sample.label.name.endswith("_labelTrainIds.png"):
        bad = raw[(raw >= NUM_CLASSES) & (raw != IGNORE_INDEX)]
    else:
        bad = raw[~_VALID_IDS[raw]] if raw.dtype == np.uint8 else raw
    if bad.size:
        raise DataError(f"{sample.label}: label value {int(bad.flat[0])} is not a Cityscapes class id")
    return read_train_ids(sample.label)


class CityscapesDataset(Dataset):
    """Items are (3xHxW float image, HxW int64 trainIds). Indices may be (index, seed) pairs: the seed fixes
    the augmentation of that draw, so a resumed run sees exactly the images an uninterrupted one would."""

    def __init__(self, root: str | Path, split: str, preprocess: Preprocess, transform=None):
        self.samples = find_samples(root, split)
        self.preprocess = preprocess.with_size(None)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        image = read_image(sample.image)
        label = read_checked_train_ids(sample)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{sample.label}: label is {label.shape[1]}x{label.shape[0]}, image "
                f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
            )
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        return torch.from_numpy(self.preprocess.to_array(image)), torch.from_numpy(label.astype(np.int64))
