"""Map the authors' original Cityscapes checkpoints onto seglite's networks.

seglite's modules keep the authors' attribute names, so conversion is a few renames of wrapper
layers (the originals wrap bare convs in `C`/`CDilated` modules and some blocks in `nn.Sequential`)
plus detecting which network and width a file holds from its keys and shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from seglite.errors import CheckpointError

ESPNETV2_SCALE_BY_BASE = {16: 0.5, 32: 1.0, 48: 1.5, 64: 2.0}


@dataclass(frozen=True)
class OriginalFormat:
    family: str  # "espnetv1", "espnetv1_c" or "espnetv2"
    model_name: str
    model_kwargs: dict
    num_classes: int


def detect_original(state: dict[str, torch.Tensor]) -> OriginalFormat | None:
    """Which authors' network a plain state dict belongs to, or None if it is none of them."""
    keys = set(state)
    if "encoder.level1.conv.weight" in keys and "classifier.weight" in keys:
        p = _count_blocks(keys, "encoder.level2.")
        q = _count_blocks(keys, "encoder.level3.")
        classes = state["classifier.weight"].shape[0]
        return OriginalFormat("espnetv1", "espnetv1", {"p": p, "q": q}, classes)
    if "level1.conv.weight" in keys and "classifier.conv.weight" in keys:
        p, q = _count_blocks(keys, "level2."), _count_blocks(keys, "level3.")
        classes = state["classifier.conv.weight"].shape[0]
        return OriginalFormat("espnetv1_c", "espnetv1_c", {"p": p, "q": q}, classes)
    if "base_net.level1.conv.weight" in keys and "bu_dec_l4.merge_layer.3.weight" in keys:
        level2_channels = state["base_net.level2_0.act.weight"].shape[0]
        scale = ESPNETV2_SCALE_BY_BASE.get(level2_channels // 2)
        if scale is None:
            raise CheckpointError(f"ESPNetv2 checkpoint with {level2_channels} level-2 channels matches no width scale")
        classes = state["bu_dec_l4.merge_layer.3.weight"].shape[0]
        return OriginalFormat("espnetv2", f"espnetv2_s{scale}", {}, classes)
    return None


def _count_blocks(keys: set[str], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({m.group(1) for k in keys if (m := pattern.match(k))})


_V1_RENAMES = [(re.compile(r"(^|\.)(c1|d1|d2|d4|d8|d16|classifier|level3_C)\.conv\."), r"\1\2.")]
_V2_RENAMES = [
    (re.compile(r"\.cbr\.0\."), ".conv."),
    (re.compile(r"\.cbr\.1\."), ".bn."),
    (re.compile(r"\.cbr\.2\."), ".act."),
    (re.compile(r"\.br\.0\."), ".bn."),
    (re.compile(r"\.br\.1\."), ".act."),
    (re.compile(r"\.spp_dw\.(\d+)\.conv\."), r".spp_dw.\1."),
]


def rename_keys(state: dict[str, torch.Tensor], family: str) -> dict[str, torch.Tensor]:
    rules = _V2_RENAMES if family == "espnetv2" else _V1_RENAMES
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = pattern.sub(replacement, key)
        renamed[key] = value
    return renamed
