"""ESPNetv2 (Mehta et al., CVPR 2019) with the EdgeNets segmentation head.

EESP units (grouped 1x1 reduce, K depth-wise dilated branches, HFF, grouped 1x1 expand), strided
EESP with an average-pool shortcut and input-image reinforcement, and the EdgeNets decoder
(efficient pyramid pooling + gated point-wise merges). Attribute names mirror the authors'
`EdgeNets` code so their Cityscapes checkpoints map key for key (see seglite.zoo.convert).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seglite.models.base import SegmentationNet, upsample_logits
from seglite.models.fused import bn_prelu
from seglite.models.layers import (
    BNPReLU,
    ConvBN,
    ConvBNPReLU,
    GlobalAvgPool,
    adaptive_avg_pool,
    dilated_conv,
    halve_avg,
)
from seglite.models.registry import register_model

BRANCHES = 4
RECEPTIVE_LIMITS = (13, 11, 9, 7, 5)
DECODER_BASE = 16  # EdgeNets' value for Cityscapes
PYRAMID_SCALES = (2.0, 1.5, 1.0, 0.5, 0.1)


def level_channels(scale: float) -> list[int]:
    """Channels of levels 1-4 for width scale s (EdgeNets' espnetv2_config rule)."""
    base = int(math.ceil(int(32 * scale) / BRANCHES) * BRANCHES)
    return [32 if base > 32 else base, 2 * base, 4 * base, 8 * base]


class EESP(nn.Module):
    """Extremely Efficient Spatial Pyramid unit.

    `strided=True` is the stride-2 variant used inside DownSampler: it skips the residual and the
    final activation, which the DownSampler applies after merging its branches.
    """

    def __init__(self, c_in: int, c_out: int, receptive_limit: int, strided: bool = False):
        super().__init__()
        width = c_out // BRANCHES
        if width * BRANCHES != c_out:
            raise ValueError(f"EESP output channels {c_out} must be divisible by {BRANCHES}")
        kernel_sizes = sorted(k if k <= receptive_limit else 3 for k in (3 + 2 * i for i in range(BRANCHES)))
        self.proj_1x1 = ConvBNPReLU(c_in, width, 1, groups=BRANCHES)
        self.spp_dw = nn.ModuleList(
            dilated_conv(width, width, (k - 1) // 2, stride=2 if strided else 1, groups=width) for k in kernel_sizes
        )
        self.conv_1x1_exp = ConvBN(c_out, c_out, 1, groups=BRANCHES)
        self.br_after_cat = BNPReLU(c_out)
        self.module_act = nn.PReLU(c_out)
        self.strided = strided
        if strided:
            # The authors' strided EESP owns this activation but never applies it (DownSampler does);
            # it stays for checkpoint compatibility and is frozen so optimisers and DDP skip it.
            self.module_act.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        branches = [self.spp_dw[0](reduced)]
        for conv in self.spp_dw[1:]:
            branches.append(conv(reduced) + branches[-1])  # HFF, including the first branch
        merged = self.br_after_cat(torch.cat(branches, 1))
        if self.strided:
            return self.conv_1x1_exp(merged)
        expanded = self.conv_1x1_exp.conv(merged)
        residual = x if expanded.shape == x.shape else None
        return bn_prelu(self.conv_1x1_exp.bn, self.module_act, expanded, residual)


class DownSampler(nn.Module):
    """Strided EESP: concat(avg-pool(x), EESP_s2(x)) + projection of the pooled image, then PReLU."""

    def __init__(self, c_in: int, c_out: int, receptive_limit: int):
        super().__init__()
        self.eesp = EESP(c_in, c_out - c_in, receptive_limit, strided=True)
        self.inp_reinf = nn.Sequential(ConvBNPReLU(3, 3, 3), ConvBN(3, c_out, 1))
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        out = torch.cat([halve_avg(x), self.eesp(x)], 1)
        reinforce, projection = self.inp_reinf
        return bn_prelu(projection.bn, self.act, projection.conv(reinforce(image)), out)  # out + BN(...), then PReLU


class EESPNetBackbone(nn.Module):
    """Levels 1-4 of the ESPNetv2 classification network (level 5 is unused for segmentation)."""

    def __init__(self, scale: float):
        super().__init__()
        channels = level_channels(scale)
        self.config = channels
        self.level1 = ConvBNPReLU(3, channels[0], 3, 2)
        self.level2_0 = DownSampler(channels[0], channels[1], RECEPTIVE_LIMITS[0])
        self.level3_0 = DownSampler(channels[1], channels[2], RECEPTIVE_LIMITS[1])
        self.level3 = nn.ModuleList(EESP(channels[2], channels[2], RECEPTIVE_LIMITS[2]) for _ in range(3))
        self.level4_0 = DownSampler(channels[2], channels[3], RECEPTIVE_LIMITS[2])
        self.level4 = nn.ModuleList(EESP(channels[3], channels[3], RECEPTIVE_LIMITS[3]) for _ in range(7))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        # The image pyramid is pooled incrementally (1/4, 1/8, 1/16): same values as pooling from full size.
        quarter = halve_avg(halve_avg(image))
        eighth = halve_avg(quarter)
        sixteenth = halve_avg(eighth)
        out_l1 = self.level1(image)
        out_l2 = self.level2_0(out_l1, quarter)
        out_l3 = self.level3_0(out_l2, eighth)
        for layer in self.level3:
            out_l3 = layer(out_l3)
        out_l4 = self.level4_0(out_l3, sixteenth)
        for layer in self.level4:
            out_l4 = layer(out_l4)
        return [out_l1, out_l2, out_l3, out_l4]


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # Shuffle inside each pixel's channel vector: one copy, and the result stays channels_last (the NCHW
            # route below costs two full-resolution copies there, ~15 % of ESPNetv2's CPU time at 1024x512).
            pixels = x.permute(0, 2, 3, 1).reshape(n, h, w, self.groups, c // self.groups)
            return pixels.transpose(3, 4).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class EfficientPyrPool(nn.Module):
    """Depth-wise convs applied to the projected map at five scales, shuffled and merged."""

    def __init__(self, c_in: int, c_proj: int, c_out: int, last_layer: bool = False):
        super().__init__()
        n_scales = len(PYRAMID_SCALES)
        self.projection_layer = ConvBNPReLU(c_in, c_proj, 1)
        self.stages = nn.ModuleList(
            nn.Conv2d(c_proj, c_proj, 3, 1, 1, groups=c_proj, bias=False) for _ in PYRAMID_SCALES
        )
        self.merge_layer = nn.Sequential(
            BNPReLU(c_proj * n_scales),
            ChannelShuffle(n_scales),
            ConvBNPReLU(c_proj * n_scales, c_proj, 3, groups=c_proj),
            nn.Conv2d(c_proj, c_out, 1, bias=last_layer),
        )
        self.br = None if last_layer else BNPReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        height, width = (int(v) for v in x.shape[-2:])  # constants in a traced export, as the sizes below
        outputs = []
        for scale, stage in zip(PYRAMID_SCALES, self.stages, strict=True):
            size = (max(int(math.ceil(height * scale)), 5), max(int(math.ceil(width * scale)), 5))
            if scale < 1.0:
                y = stage(adaptive_avg_pool(x, size))
                y = F.interpolate(y, (height, width), mode="bilinear", align_corners=True)
            elif scale > 1.0:
                y = stage(F.interpolate(x, size, mode="bilinear", align_corners=True))
                y = adaptive_avg_pool(y, (height, width))
            else:
                y = stage(x)
            outputs.append(y)
        out = self.merge_layer(torch.cat(outputs, 1))
        return self.br(out) if self.br is not None else out


class EfficientPWConv(nn.Module):
    """Grouped 3x3 projection gated by a sigmoid of the globally pooled input."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.wt_layer = nn.Sequential(GlobalAvgPool(), nn.Conv2d(c_in, c_out, 1, bias=False), nn.Sigmoid())
        self.expansion_layer = ConvBNPReLU(c_in, c_out, 3, groups=math.gcd(c_in, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


class ESPNetv2(SegmentationNet):
    """`decoder_proj`: the decoder's projection width, EdgeNets' min(classes // 2, 16) by default. Fine-tuning the
    published 20-output weights keeps their 10 (see finetune_kwargs), so the whole decoder loads, not just the
    encoder."""

    stride = 16
    encoder_prefixes = ("base_net.",)

    def __init__(self, num_classes: int = 19, scale: float = 1.0, decoder_proj: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.scale = scale
        self.base_net = EESPNetBackbone(scale)
        channels = self.base_net.config
        planes = [4 * DECODER_BASE, 3 * DECODER_BASE, 2 * DECODER_BASE, num_classes]
        proj = decoder_proj or max(1, min(num_classes // 2, DECODER_BASE))
        self.decoder_proj = proj
        self.bu_dec_l1 = EfficientPyrPool(channels[3], proj, planes[0])
        self.bu_dec_l2 = EfficientPyrPool(planes[0], proj, planes[1])
        self.bu_dec_l3 = EfficientPyrPool(planes[1], proj, planes[2])
        self.bu_dec_l4 = EfficientPyrPool(planes[2], proj, planes[3], last_layer=True)
        self.merge_enc_dec_l2 = EfficientPWConv(channels[2], planes[0])
        self.merge_enc_dec_l3 = EfficientPWConv(channels[1], planes[1])
        self.merge_enc_dec_l4 = EfficientPWConv(channels[0], planes[2])
        self.bu_br_l2 = nn.Sequential(nn.BatchNorm2d(planes[0]), nn.PReLU(planes[0]))
        self.bu_br_l3 = nn.Sequential(nn.BatchNorm2d(planes[1]), nn.PReLU(planes[1]))
        self.bu_br_l4 = nn.Sequential(nn.BatchNorm2d(planes[2]), nn.PReLU(planes[2]))
        self._init_weights()

    def finetune_kwargs(self) -> dict:
        return {"decoder_proj": self.decoder_proj}

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        out_l1, out_l2, out_l3, out_l4 = self.base_net(x)
        decoded = self.bu_dec_l1(out_l4)
        for skip, merge, br, dec in (
            (out_l3, self.merge_enc_dec_l2, self.bu_br_l2, self.bu_dec_l2),
            (out_l2, self.merge_enc_dec_l3, self.bu_br_l3, self.bu_dec_l3),
            (out_l1, self.merge_enc_dec_l4, self.bu_br_l4, self.bu_dec_l4),
        ):
            up = F.interpolate(decoded, scale_factor=2, mode="bilinear", align_corners=True)
            decoded = dec(bn_prelu(br[0], br[1], merge(skip) + up))
        return upsample_logits(decoded, x.shape[-2:], align_corners=True)


for _scale in (0.5, 1.0, 1.5, 2.0):
    register_model(f"espnetv2_s{_scale}", ESPNetv2, f"ESPNetv2 (EdgeNets head), width scale {_scale}", scale=_scale)
