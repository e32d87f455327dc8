"""Knowledge distillation: a trained teacher's softened per-pixel class distribution as a second training target.

The loss is Hinton et al.'s: cross-entropy on the labels + weight * T^2 * KL(teacher_T || student_T), where _T is a
softmax at temperature T (T^2 keeps the soft term's gradient scale independent of T). Written by hand: neither timm
nor smp ships a segmentation distillation loss, and the teacher must see the student's augmented batch.

With `cache`, the teacher instead labels every training image once, before training, at the image's own size (with
test-time scales and flips if asked), and the augmentation moves those logits with the image (seglite.data.dataset):
the per-step teacher cost goes, which on a CPU buys the student more iterations in the same time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seglite.data.labels import IGNORE_INDEX
from seglite.errors import SegliteError
from seglite.zoo.checkpoint import LoadedWeights
from seglite.zoo.preprocess import Preprocess


def _input_affine(student: Preprocess, teacher: Preprocess) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """(swap channels, scale, shift) with teacher_input = scale * student_input[swapped] + shift, per channel: the
    batch is normalised once, for the student, and re-expressed in the teacher's convention."""
    swap = student.color_order != teacher.color_order
    s_mean, s_std = torch.tensor(student.mean), torch.tensor(student.std) / student.post_scale
    if swap:
        s_mean, s_std = s_mean.flip(0), s_std.flip(0)
    t_mean, t_std = torch.tensor(teacher.mean), torch.tensor(teacher.std) / teacher.post_scale
    # pixel = x_s * s_std + s_mean; x_t = (pixel - t_mean) / t_std
    return swap, (s_std / t_std).view(1, 3, 1, 1), ((s_mean - t_mean) / t_std).view(1, 3, 1, 1)


class Teacher:
    """A frozen network in eval mode that returns its logits for the student's batch, in the student's class order,
    and keeps count of the seconds it spent (the log shows its cost)."""

    def __init__(
        self,
        loaded: LoadedWeights,
        class_names: tuple[str, ...],
        dataset_name: str,
        student_preprocess: Preprocess,
        device: torch.device,
        channels_last: bool,
    ):
        teacher_names = tuple(loaded.classes)[: loaded.num_outputs]
        if sorted(teacher_names) != sorted(class_names):
            raise SegliteError(
                f"distill.teacher {loaded.source}: predicts {len(teacher_names)} classes "
                f"({', '.join(teacher_names[:5])}{', ...' if len(teacher_names) > 5 else ''}), the data set "
                f"{dataset_name!r} has {len(class_names)} ({', '.join(class_names[:5])}"
                f"{', ...' if len(class_names) > 5 else ''}); use a teacher trained on this data set's classes "
                "(fine-tune one first, e.g. configs/camvid_espnetv2_s1.0_finetune.yaml for CamVid)"
            )
        self.source = loaded.source
        self.order = torch.tensor([teacher_names.index(name) for name in class_names], device=device)
        self.reorder = self.order.tolist() != list(range(len(class_names)))
        self.swap, scale, shift = _input_affine(student_preprocess, loaded.preprocess)
        self.scale, self.shift = scale.to(device), shift.to(device)
        self.identity_input = not self.swap and bool((scale == 1).all() and (shift == 0).all())
        memory_format = torch.channels_last if channels_last else torch.preserve_format
        self.net = loaded.model.to(device, memory_format=memory_format).eval().requires_grad_(False)
        self.device, self.channels_last = device, channels_last
        self.seconds = 0.0

    @torch.no_grad()
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        if not self.identity_input:
            inputs = (inputs.flip(1) if self.swap else inputs) * self.scale + self.shift
        logits = self.net(inputs)
        if self.reorder:
            logits = logits.index_select(1, self.order)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - start
        return logits


class DistillationLoss(nn.Module):
    """`hard` (the label loss) + weight * T^2 * KL(teacher_T || student_T) averaged over labelled pixels, or over
    every pixel when `teach_ignored` (pixels without a label then learn from the teacher alone). With `stride` > 1 the
    soft term compares both logit maps average-pooled by that factor (a cell counts as labelled if all its pixels are).
    """

    def __init__(
        self, hard: nn.Module, weight: float, temperature: float, teach_ignored: bool = False, stride: int = 1
    ):
        super().__init__()
        self.hard, self.weight, self.temperature, self.teach_ignored = hard, weight, temperature, teach_ignored
        self.stride = stride

    def soft(self, logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cached teacher logits are NaN where the augmentation padded the crop: those pixels learn nothing."""
        if teacher_logits.shape[-2:] != logits.shape[-2:]:
            teacher_logits = F.interpolate(teacher_logits, logits.shape[-2:], mode="bilinear", align_corners=False)
        labelled = None if self.teach_ignored else target != IGNORE_INDEX  # the mask only where it is used
        if self.stride > 1:  # a NaN (padded) teacher pixel leaves its whole cell untaught
            pool = dict(kernel_size=self.stride, ceil_mode=True)
            logits = F.avg_pool2d(logits.float(), **pool)
            teacher_logits = F.avg_pool2d(teacher_logits.float(), **pool)
            if labelled is not None:
                labelled = F.avg_pool2d(labelled[:, None].float(), **pool)[:, 0] == 1
        t = self.temperature
        taught = teacher_logits[:, 0].isfinite()
        with torch.no_grad():
            teacher_log = F.log_softmax(teacher_logits.float().nan_to_num(0.0) / t, dim=1)
            teacher_prob = teacher_log.exp()
            neg_entropy = (teacher_prob * teacher_log).sum(1)
        # KL(p || q) = cross-entropy(p, q) - entropy(p): the fused soft-target cross-entropy is ~25 % faster on a CPU
        # than log_softmax + kl_div, and the entropy needs no gradient.
        per_pixel = F.cross_entropy(logits.float() / t, teacher_prob, reduction="none") + neg_entropy
        valid = taught if labelled is None else taught & labelled
        if not valid.any():
            return per_pixel.sum() * 0.0
        return per_pixel[valid].mean() * t * t

    def forward(self, logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return self.hard(logits, target) + self.weight * self.soft(logits, teacher_logits, target)


def multiscale_logits(
    network: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Mean logits (1xCxHxW) over input scales and, with `flip`, mirrored copies, each resized back to the image."""
    size = image.shape[-2:]
    batch = torch.cat([image, image.flip(-1)]) if flip else image
    total = None
    for scale in scales:
        scaled = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
        inputs = batch if scaled == tuple(size) else F.interpolate(batch, scaled, mode="bilinear", align_corners=False)
        logits = network(inputs).float()
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size, mode="bilinear", align_corners=False)
        if flip:
            logits = logits[:1] + logits[1:].flip(-1)
        total = logits if total is None else total + logits
    return total / (len(scales) * (2 if flip else 1))


def cached_soft_targets(
    teacher: Teacher, images: Sequence[torch.Tensor], scales: Sequence[float], flip: bool, progress=None
) -> list[np.ndarray]:
    """The teacher's logits for each (3xHxW, the student's input convention) image as an HxWxC float16 array: the
    layout the augmentation (albumentations masks) moves with the image."""
    memory_format = torch.channels_last if teacher.channels_last else torch.preserve_format
    out = []
    for image in images:
        inputs = image[None].to(teacher.device).contiguous(memory_format=memory_format)
        logits = multiscale_logits(teacher, inputs, scales, flip)
        out.append(logits[0].permute(1, 2, 0).to(torch.float16).cpu().numpy())
        if progress is not None:
            progress()
    return out
