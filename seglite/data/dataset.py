"""A torch Dataset over any configured data set (seglite.data.datasets): masks become class ids on the fly."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from seglite.data.cityscapes import read_image
from seglite.data.datasets import DatasetSpec
from seglite.errors import DataError
from seglite.zoo.preprocess import Preprocess


class SegmentationDataset(Dataset):
    """Items are (3xHxW float image, HxW int64 class ids, 255 = ignore). Indices may be (index, seed) pairs: the
    seed fixes the augmentation of that draw, so a resumed run sees exactly the images an uninterrupted one would."""

    def __init__(self, spec: DatasetSpec, split: str, preprocess: Preprocess, transform=None):
        self.spec = spec
        self.samples = spec.samples(split)
        self.preprocess = preprocess.with_size(None)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        image = read_image(sample.image)
        label = self.spec.read_label(sample)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{sample.label}: mask is {label.shape[1]}x{label.shape[0]}, image "
                f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
            )
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
        return torch.from_numpy(self.preprocess.to_array(image)), torch.from_numpy(label.astype(np.int64))
