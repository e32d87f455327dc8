"""A torch Dataset over any configured data set (seglite.data.datasets): masks become class ids on the fly."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from seglite.data.cityscapes import read_image
from seglite.data.datasets import DatasetSpec
from seglite.data.labels import IGNORE_INDEX
from seglite.errors import DataError
from seglite.zoo.preprocess import Preprocess


class SegmentationDataset(Dataset):
    """Items are (3xHxW float image, HxW int64 class ids, 255 = ignore). Indices may be (index, seed) pairs: the
    seed fixes the augmentation of that draw, so a resumed run sees exactly the images an uninterrupted one would.

    With `soft_targets` (an HxWxC array per image: a teacher's logits, seglite.training.distill), items gain a third
    entry, HxWxC float16, moved by the same augmentation (a transform built with `soft_targets=True`) and NaN where
    it padded the crop."""

    def __init__(
        self,
        spec: DatasetSpec,
        split: str,
        preprocess: Preprocess,
        transform=None,
        soft_targets: list[np.ndarray] | None = None,
    ):
        self.spec = spec
        self.samples = spec.samples(split)
        self.preprocess = preprocess.with_size(None)
        self.transform = transform
        self.soft_targets = soft_targets

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item) -> tuple[torch.Tensor, ...]:
        index, seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        image = read_image(sample.image)
        label = self.spec.read_label(sample)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"{sample.label}: mask is {label.shape[1]}x{label.shape[0]}, image "
                f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
            )
        extra = {} if self.soft_targets is None else {"soft": self.soft_targets[index].astype(np.float32)}
        if self.transform is not None:
            if seed is not None:
                self.transform.set_random_seed(seed)
            out = self.transform(image=image, mask=label, **extra)
            image, label = out["image"], out["mask"]
            if extra:  # padding fills every mask with the ignore value; no logit is exactly 255
                extra["soft"] = out["soft"]
                extra["soft"][extra["soft"][..., 0] == IGNORE_INDEX] = np.nan
        item = (torch.from_numpy(self.preprocess.to_array(image)), torch.from_numpy(label.astype(np.int64)))
        return item + (torch.from_numpy(extra["soft"].astype(np.float16)),) if extra else item
