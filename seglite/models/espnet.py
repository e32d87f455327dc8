"""ESPNet (Mehta et al., ECCV 2018): ESP modules with hierarchical feature fusion.

Structure follows the authors' `test/Model.py`, the variant their released Cityscapes checkpoints
load into; attribute names mirror theirs so a checkpoint maps key for key (see seglite.zoo.convert).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglite.models.base import SegmentationNet, portable_graph_active, upsample_logits
from seglite.models.fused import bn_prelu
from seglite.models.layers import BNPReLU, ConvBNPReLU, dilated_conv, halve_avg
from seglite.models.registry import register_model

BN_EPS = 1e-3  # ESPNet v1 used eps 1e-3 everywhere; the checkpoints' statistics assume it.
DILATIONS = (1, 2, 4, 8, 16)


class ESPModule(nn.Module):
    """Reduce -> 5 parallel dilated 3x3 convs -> hierarchical fusion -> concat (-> + input) -> BN+PReLU.

    `downsample=True` is the strided ESP: a 3x3 stride-2 reduce and no residual.

    Fewer than 5 output channels (the light decoder's last module has `classes` channels): the module keeps
    K = c_out branches with dilations 1, 2, ..., 2^(K-1), one channel each, so every branch exists and HFF still
    sums them cumulatively. This is our generalisation (the authors' code cannot build it); from 5 channels on it
    is the paper's module unchanged, so the published checkpoints load as before.
    """

    def __init__(self, c_in: int, c_out: int, residual: bool = True, downsample: bool = False):
        super().__init__()
        branches = min(len(DILATIONS), c_out)
        width = c_out // branches
        first_width = c_out - (branches - 1) * width  # the rate-1 branch absorbs the remainder
        if downsample:
            self.c1 = nn.Conv2d(c_in, width, 3, 2, 1, bias=False)
        else:
            self.c1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.d1 = dilated_conv(width, first_width, 1)
        for rate in DILATIONS[1:]:
            conv = dilated_conv(width, width, rate) if DILATIONS.index(rate) < branches else None
            setattr(self, f"d{rate}", conv)
        self.residual = residual and not downsample and c_in == c_out
        if downsample:
            self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
            self.act = nn.PReLU(c_out)
        else:
            self.bn = BNPReLU(c_out, bn_eps=BN_EPS)
            self.act = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_reduced(self.c1(x), x)

    def forward_reduced(self, reduced: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        """The module after its reduce conv `c1` (`x`, the input, is needed only for the residual)."""
        # HFF: the rate-1 branch is kept apart; rates 2..16 are summed cumulatively (removes gridding).
        branches, fused = [self.d1(reduced)], None
        for conv in (self.d2, self.d4, self.d8, self.d16):
            if conv is not None:
                fused = conv(reduced) if fused is None else fused + conv(reduced)
                branches.append(fused)
        out = torch.cat(branches, 1)
        if self.residual:
            out = out + x
        return self.bn(out) if self.act is None else bn_prelu(self.bn, self.act, out)


def bnprelu_parts(br: BNPReLU, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    """`br(cat(parts))`, split back into the parts: in eval mode BN and PReLU act channel by channel, so the
    concatenation is never built (training keeps it: one batch-statistics update for the whole BN)."""
    if br.training or portable_graph_active():  # sliced BN and PReLU weights are no static params to XNNPACK
        return [br(torch.cat(parts, 1))]
    outputs, start = [], 0
    for part in parts:
        end = start + part.shape[1]
        bn, act = br.bn, br.act
        part = F.batch_norm(
            part,
            bn.running_mean[start:end],
            bn.running_var[start:end],
            bn.weight[start:end],
            bn.bias[start:end],
            False,
            0.0,
            bn.eps,
        )
        outputs.append(F.prelu(part, act.weight[start:end]))
        start = end
    return outputs


def conv_parts(conv: nn.Conv2d, parts: list[torch.Tensor]) -> torch.Tensor:
    """`conv(cat(parts))` as a sum of convolutions over the parts' input channels: the concatenation (odd channel
    counts like 19, 35 or 131 at 1/2 and 1/4 resolution, slow to write channels-last) is never built."""
    if portable_graph_active():
        return conv(parts[0] if len(parts) == 1 else torch.cat(parts, 1))
    total, start = None, 0
    for part in parts:
        end = start + part.shape[1]
        weight = conv.weight[:, start:end]
        bias = conv.bias if total is None else None
        out = F.conv2d(part, weight, bias, conv.stride, conv.padding, conv.dilation)
        total = out if total is None else total + out
        start = end
    return total


def image_pyramid(image: torch.Tensor, times: int) -> torch.Tensor:
    """Input-image reinforcement: the image average-pooled (3x3, stride 2) `times` times."""
    for _ in range(times):
        image = halve_avg(image)
    return image


class ESPNetC(SegmentationNet):
    """The ESPNet-C encoder; its 1/8-resolution logits are upsampled to the input size."""

    stride = 8
    encoder_prefixes = ("level", "b1.", "b2.", "b3.")

    def __init__(self, num_classes: int = 19, p: int = 2, q: int = 8):
        super().__init__()
        self.num_classes = num_classes
        self.level1 = ConvBNPReLU(3, 16, 3, 2, bn_eps=BN_EPS)
        self.b1 = BNPReLU(16 + 3, bn_eps=BN_EPS)
        self.level2_0 = ESPModule(16 + 3, 64, downsample=True)
        self.level2 = nn.ModuleList(ESPModule(64, 64) for _ in range(p))
        self.b2 = BNPReLU(128 + 3, bn_eps=BN_EPS)
        self.level3_0 = ESPModule(128 + 3, 128, downsample=True)
        self.level3 = nn.ModuleList(ESPModule(128, 128) for _ in range(q))
        self.b3 = BNPReLU(256, bn_eps=BN_EPS)
        self.classifier = nn.Conv2d(256, num_classes, 1, bias=False)

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Return (level1 output at 1/2, b2 output at 1/4 as its concatenated parts, 1/8 class logits).

        The b1/b2 concatenations are built only in training (see bnprelu_parts and conv_parts).
        """
        half_image = image_pyramid(image, 1)
        quarter_image = image_pyramid(half_image, 1)
        out_l1 = self.level1(image)
        out_l1_cat = bnprelu_parts(self.b1, [out_l1, half_image])
        out_l2_0 = self.level2_0.forward_reduced(conv_parts(self.level2_0.c1, out_l1_cat), None)
        out_l2 = out_l2_0
        for layer in self.level2:
            out_l2 = layer(out_l2)
        out_l2_cat = bnprelu_parts(self.b2, [out_l2, out_l2_0, quarter_image])
        out_l3_0 = self.level3_0.forward_reduced(conv_parts(self.level3_0.c1, out_l2_cat), None)
        out_l3 = out_l3_0
        for layer in self.level3:
            out_l3 = layer(out_l3)
        out_l3_cat = self.b3(torch.cat([out_l3_0, out_l3], 1))
        return out_l1, out_l2_cat, self.classifier(out_l3_cat)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.encode(x)[2]
        return upsample_logits(logits, x.shape[-2:], align_corners=False)


class ESPNet(SegmentationNet):
    """Full ESPNet: the ESPNet-C encoder plus the light decoder of `test/Model.py`.

    The paper's decoder is `num_classes` channels wide throughout (`decoder_width` None). Fine-tuned to other
    classes it keeps the init weights' width (finetune_kwargs) and only the last transposed conv maps it to the new
    classes: its ESP module's branch split follows the width, so at another width it could not load and restarted
    (CamVid: 0 IoU on five classes)."""

    stride = 8
    encoder_prefixes = ("encoder.",)

    def __init__(self, num_classes: int = 19, p: int = 2, q: int = 8, decoder_width: int | None = None):
        super().__init__()
        c = decoder_width or num_classes
        self.num_classes = num_classes
        self.decoder_width = c
        self.encoder = ESPNetC(c, p, q)
        self.level3_C = nn.Conv2d(128 + 3, c, 1, bias=False)
        self.br = nn.BatchNorm2d(c, eps=BN_EPS)
        self.conv = ConvBNPReLU(16 + c, c, 3, bn_eps=BN_EPS)
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(BNPReLU(2 * c, bn_eps=BN_EPS), ESPModule(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), BNPReLU(c, bn_eps=BN_EPS))
        self.classifier = nn.ConvTranspose2d(c, num_classes, 2, stride=2, bias=False)

    def finetune_kwargs(self) -> dict:
        return {"decoder_width": self.decoder_width}

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        out_l1, out_l2_cat, logits_l3 = self.encoder.encode(x)
        up_l3 = self.up_l3(self.br(logits_l3))
        merged = self.up_l2(self.combine_l2_l3(torch.cat([conv_parts(self.level3_C, out_l2_cat), up_l3], 1)))
        merged = bn_prelu(self.conv.bn, self.conv.act, conv_parts(self.conv.conv, [merged, out_l1]))
        return self.classifier(merged)


register_model("espnetv1", ESPNet, "ESPNet with the light decoder (ECCV'18), p=2 q=8", p=2, q=8)
register_model("espnetv1_c", ESPNetC, "ESPNet-C encoder only, logits upsampled x8", p=2, q=8)
