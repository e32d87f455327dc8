"""The input convention a set of weights was trained with; it travels inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch

from seglite.errors import CheckpointError

_HAS_BLOB = hasattr(cv2, "dnn") and hasattr(cv2.dnn, "blobFromImageWithParams")
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class Preprocess:
    """x = (image[color_order] - mean) / std * post_scale, after resizing to `size` (W, H) if set.

    mean/std are on the 0-255 scale in `color_order`. `post_scale` exists for ESPNet v1, whose weights
    expect a second division by 255 after the standardisation; its test script also resizes the
    standardised float image rather than the uint8 one (`resize_float`), which changes rounding.
    """

    color_order: str = "rgb"
    mean: tuple[float, float, float] = IMAGENET_MEAN_255
    std: tuple[float, float, float] = IMAGENET_STD_255
    post_scale: float = 1.0
    size: tuple[int, int] | None = None
    resize_float: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["size"] = list(self.size) if self.size else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        try:
            return cls(
                color_order=str(d.get("color_order", "rgb")).lower(),
                mean=tuple(float(v) for v in d.get("mean", IMAGENET_MEAN_255)),
                std=tuple(float(v) for v in d.get("std", IMAGENET_STD_255)),
                post_scale=float(d.get("post_scale", 1.0)),
                size=tuple(int(v) for v in d["size"]) if d.get("size") else None,
                resize_float=bool(d.get("resize_float", False)),
            )
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"invalid preprocessing record {d!r}: {exc}") from None

    def with_size(self, size: tuple[int, int] | None) -> Preprocess:
        return replace(self, size=tuple(size) if size else None)

    def resize(self, image: np.ndarray) -> np.ndarray:
        if self.size is None or (image.shape[1], image.shape[0]) == tuple(self.size):
            return image
        return cv2.resize(image, tuple(self.size), interpolation=cv2.INTER_LINEAR)

    def normalize(self, image_bgr: np.ndarray) -> np.ndarray:
        """HxWx3 BGR (uint8 or float) -> HxWx3 float32, standardised, in the network's colour order."""
        image = image_bgr[:, :, ::-1] if self.color_order == "rgb" else image_bgr
        mean = np.asarray(self.mean, np.float32)
        inv_std = np.asarray(1.0 / np.asarray(self.std, np.float64), np.float32)
        return (image.astype(np.float32) - mean) * inv_std

    def to_array(self, image_bgr: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 BGR -> 3xhxw float32 network input at the configured size."""
        if not self.resize_float and image_bgr.dtype == np.uint8 and _HAS_BLOB:
            # OpenCV's blob builder does resize, colour swap, mean/std and HWC->CHW in one pass (about 7x faster
            # than the numpy path below, and equal to it: the uint8 image is resized first either way).
            params = cv2.dnn.Image2BlobParams()
            params.scalefactor = (*(float(self.post_scale / s) for s in self.std), 0.0)
            params.size = tuple(self.size) if self.size else (image_bgr.shape[1], image_bgr.shape[0])
            params.mean = (*(float(m) for m in self.mean), 0.0)
            params.swapRB = self.color_order == "rgb"
            params.ddepth = cv2.CV_32F
            return cv2.dnn.blobFromImageWithParams(image_bgr, params)[0]
        if self.resize_float:
            out = self.resize(self.normalize(image_bgr))
        else:
            out = self.normalize(self.resize(image_bgr))
        if self.post_scale != 1.0:
            out *= np.float32(self.post_scale)
        return np.ascontiguousarray(out.transpose(2, 0, 1))

    def to_hwc(self, image_bgr: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 BGR -> hxwx3 float32 network input, channels last: the memory order of a channels_last
        batch, so none has to be transposed (the blob builder's CHW output cost a 6 MB transpose per frame).
        Three OpenCV passes, half the blob builder's time at 1024x512; equal to to_array (tests hold it)."""
        if self.resize_float or image_bgr.dtype != np.uint8:
            return np.ascontiguousarray(self.to_array(image_bgr).transpose(1, 2, 0))
        image = self.resize(image_bgr)
        if self.color_order == "rgb":
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        out = cv2.subtract(image, (*self.mean, 0.0), dtype=cv2.CV_32F)
        scale = tuple(float(np.float32(self.post_scale / s)) for s in self.std)
        return cv2.multiply(out, (*scale, 0.0), dst=out)

    def channels_last(self, image_bgr: np.ndarray) -> torch.Tensor:
        """3xhxw network input in channels_last memory (a view of to_hwc)."""
        return torch.from_numpy(self.to_hwc(image_bgr)).permute(2, 0, 1)

    def __call__(self, image_bgr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.to_array(image_bgr))


ESPNET_V1 = Preprocess(
    color_order="bgr",
    mean=(72.3923111, 82.90893555, 73.15840149),
    std=(45.3192215, 46.15289307, 44.91483307),
    post_scale=1.0 / 255.0,
    size=(1024, 512),
    resize_float=True,
)
IMAGENET = Preprocess()
