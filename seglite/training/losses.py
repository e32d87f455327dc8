"""Cross-entropy with ignore 255, optional class weights and online hard example mining."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seglite.data.labels import IGNORE_INDEX


class SegmentationLoss(torch.nn.Module):
    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        ohem: bool = False,
        ohem_threshold: float = 0.7,
        ohem_min_kept: int = 100000,
    ):
        super().__init__()
        self.register_buffer("class_weights", class_weights if class_weights is not None else None)
        self.ohem, self.threshold, self.min_kept = ohem, ohem_threshold, ohem_min_kept

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] > (len(self.class_weights) if self.class_weights is not None else logits.shape[1]):
            raise ValueError("more logits channels than class weights")
        if not self.ohem:
            return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=IGNORE_INDEX)
        pixel_loss = F.cross_entropy(
            logits, target, weight=self.class_weights, ignore_index=IGNORE_INDEX, reduction="none"
        ).flatten()
        valid = target.flatten() != IGNORE_INDEX
        with torch.no_grad():  # OHEM: keep pixels whose true-class probability is below the threshold
            prob = logits.softmax(1).gather(1, target.clamp(max=logits.shape[1] - 1).unsqueeze(1)).flatten()
            prob = torch.where(valid, prob, torch.ones_like(prob))
            kept = min(self.min_kept, int(valid.sum()))
            threshold = self.threshold
            if kept > 0:
                threshold = max(threshold, float(prob.kthvalue(kept).values))
            hard = valid & (prob <= threshold)
        if not hard.any():
            return pixel_loss.sum() * 0.0
        return pixel_loss[hard].mean()
