"""DeepLabV3+ over timm PP-LCNet / MobileNetV3-large backbones, with PaddleSeg's DeepLabV3P head.

The head is the one the PP-LCNet paper trained (PaddleSeg `DeepLabV3P`): output stride 32 by default,
ASPP of a 1x1 branch + separable 3x3 branches + image pooling at 256 channels, stride-4 features reduced
to 48 channels, two separable 3x3 convs, bilinear upsampling with align_corners=False. It is written
here because smp's DeepLabV3Plus differs (OS 8/16 only, other rates, one decoder conv, no BN inside
its separable conv).
"""

from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from timm.models import mobilenetv3
from torch import nn

from seglite.errors import SegliteError
from seglite.models.base import (
    SegmentationNet,
    bilinear_matrix,
    bilinear_resize,
    portable_graph_active,
    upsample_logits,
)
from seglite.models.layers import global_avg_pool
from seglite.models.registry import register_model

ASPP_RATES = {32: (6, 12, 18), 16: (6, 12, 18), 8: (12, 24, 36)}  # PaddleSeg defaults; OS32 keeps OS16's
ASPP_CHANNELS = 256
LOW_LEVEL_CHANNELS = 48


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Depth-wise conv -> BN -> point-wise conv -> BN -> ReLU (PaddleSeg's SeparableConvBNReLU)."""

    def __init__(self, c_in: int, c_out: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(c_in, c_in, 3, padding=dilation, dilation=dilation, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.project = ConvBNReLU(c_in, c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(global_avg_pool(x))
        if portable_graph_active():  # LiteRT's BROADCAST_TO refuses this broadcast: the textbook resize, same values
            return F.interpolate(pooled, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])  # bilinear resize of a 1x1 map is a broadcast


class ASPP(nn.Module):
    def __init__(self, c_in: int, rates: tuple[int, ...], dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList(
            [ConvBNReLU(c_in, ASPP_CHANNELS)]
            + [SeparableConvBNReLU(c_in, ASPP_CHANNELS, rate) for rate in rates]
            + [ImagePooling(c_in, ASPP_CHANNELS)]
        )
        self.project = ConvBNReLU(ASPP_CHANNELS * (len(rates) + 2), ASPP_CHANNELS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([branch(x) for branch in self.branches], 1)))


def _affine(module: nn.Module, bias: torch.Tensor | None, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of `module(x + bias)` for an inference BatchNorm, or an Identity once BN is folded away."""
    bias = torch.zeros_like(like) if bias is None else bias
    if isinstance(module, nn.BatchNorm2d):
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return scale, (bias - module.running_mean) * scale + module.bias
    return torch.ones_like(like), bias


def _shifted_bilinear(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """[A(-1) | A(0) | A(+1)], size_out x 3*size_in: A(d)[i] is row i+d of F.interpolate's bilinear matrix
    (align_corners=False), zero outside, i.e. a 3-tap conv's shift applied after the upsampling."""
    padded = F.pad(bilinear_matrix(size_in, size_out, False, like), (0, 0, 1, 1))
    return torch.cat([padded[shift : shift + size_out] for shift in range(3)], dim=1)


def upsample_then_separable(
    sep: SeparableConvBNReLU, context: torch.Tensor, low: torch.Tensor, channels: int
) -> torch.Tensor:
    """`sep(cat([upsample(context), low]))` in eval mode, without building the upsampled context.

    The depth-wise 3x3, both BatchNorms and the point-wise 1x1 are linear up to the ReLU, and a channel mix
    commutes with the (channel-agnostic) bilinear upsampling and shifts. So the context channels' share is
    sum over taps t of shift_t(upsample(M_t @ context)), M_t = pointwise * depthwise tap t: 9 channel mixes at
    1/32 resolution and two small matmuls with the shifted bilinear matrices, instead of a 3x3 depth-wise conv
    and a 304->256 1x1 conv at 1/4 resolution (~2x fewer FLOPs, no concat). Same result up to float rounding.
    The matmuls run channels-last, which both PyTorch's channels_last convs and ONNX Runtime read without a copy.
    """
    depthwise, bn_in, pointwise, bn_out, _ = sep  # BN may already be folded into the convs (Identity, bias)
    scale_in, shift_in = _affine(bn_in, depthwise.bias, depthwise.weight[:, 0, 0, 0])
    scale_out, shift_out = _affine(bn_out, pointwise.bias, pointwise.weight[:, 0, 0, 0])
    mix = scale_out[:, None] * pointwise.weight[:, :, 0, 0] * scale_in[None, :]  # (out, in)
    bias = scale_out * (pointwise.weight[:, :, 0, 0] @ shift_in) + shift_out
    taps = depthwise.weight[:, 0].reshape(-1, 9)  # (in, 9), tap t = 3 * row + column
    n, _, h, w = context.shape
    height, width = low.shape[-2:]
    c_out = mix.shape[0]
    per_tap = (mix[None, :, :channels] * taps[:channels].T[:, None, :]).reshape(9 * c_out, channels)
    pixels = context.permute(0, 2, 3, 1).reshape(n, h * w, channels)
    mixed = (pixels @ per_tap.T).reshape(n, h, w, 3, 3, c_out)  # (n, y, x, row tap, column tap, c)
    mixed = mixed.permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h, 3 * w, c_out)  # (n, row tap, y, column tap * x, c)
    along_x = _shifted_bilinear(w, width, context) @ mixed  # (n, row tap, y, W, c)
    out = _shifted_bilinear(h, height, context) @ along_x.reshape(n, 3 * h, width * c_out)  # (n, H, W * c)
    out = out.reshape(n, height, width, c_out).permute(0, 3, 1, 2)  # channels-last memory, no copy
    # The bias goes in as a depth-wise 1x1 conv so that ONNX Runtime keeps the sum in its blocked layout and fuses
    # the add and ReLU into the low-level 1x1 conv (a plain add costs two layout conversions of 32 MB).
    out = F.conv2d(out, torch.ones_like(bias)[:, None, None, None], bias, groups=c_out)
    low_depthwise = F.conv2d(low, depthwise.weight[channels:], padding=1, groups=low.shape[1])
    return F.relu(F.conv2d(low_depthwise, mix[:, channels:, None, None]) + out)


class DeepLabV3PlusHead(nn.Module):
    def __init__(self, low_channels: int, high_channels: int, num_classes: int, output_stride: int):
        super().__init__()
        self.aspp = ASPP(high_channels, ASPP_RATES[output_stride])
        self.reduce_low = ConvBNReLU(low_channels, LOW_LEVEL_CHANNELS)
        self.fuse = nn.Sequential(
            SeparableConvBNReLU(ASPP_CHANNELS + LOW_LEVEL_CHANNELS, ASPP_CHANNELS),
            SeparableConvBNReLU(ASPP_CHANNELS, ASPP_CHANNELS),
        )
        self.classifier = nn.Conv2d(ASPP_CHANNELS, num_classes, 1)

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        context, low = self.aspp(high), self.reduce_low(low)
        if self.training or portable_graph_active():
            context = bilinear_resize(context, low.shape[-2:], align_corners=False)
            return self.classifier(self.fuse(torch.cat([context, low], 1)))
        fused = upsample_then_separable(self.fuse[0], context, low, ASPP_CHANNELS)
        return self.classifier(self.fuse[1](fused))


def _mobilenetv3_large_050(**kwargs) -> nn.Module:
    # MobileNetV3-large 0.5x is not registered in timm; build it with timm's own generator.
    return mobilenetv3._gen_mobilenet_v3("mobilenetv3_large_050", 0.5, pretrained_cfg=mobilenetv3._cfg(), **kwargs)


def build_backbone(name: str, output_stride: int, pretrained: bool | str) -> nn.Module:
    """timm features model returning (stride-4, last) feature maps."""
    kwargs: dict = dict(features_only=True, out_indices=(1, 4))
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    if isinstance(pretrained, str):
        kwargs["pretrained_cfg_overlay"] = dict(file=pretrained)
    want_weights = bool(pretrained)
    try:
        if name == "mobilenetv3_large_050":
            if want_weights:
                raise SegliteError(
                    "no ImageNet weights exist for MobileNetV3-large 0.5x; use pretrained_backbone=False"
                )
            backbone = _mobilenetv3_large_050(pretrained=False, **kwargs)
        else:
            backbone = timm.create_model(name, pretrained=want_weights, **kwargs)
    except SegliteError:
        raise
    except Exception as exc:  # timm raises many kinds (network, missing file, no weights for this model)
        if not want_weights:
            raise
        source = pretrained if isinstance(pretrained, str) else "the timm hub"
        raise SegliteError(
            f"could not load ImageNet weights for backbone {name!r} from {source} ({type(exc).__name__}); "
            "pass pretrained_backbone=PATH to a local timm weight file, or pretrained_backbone=False"
        ) from exc
    if name.startswith("mobilenetv3"):
        # PaddleSeg's MobileNetV3 ends at the last bottleneck (160*s channels), without the 960*s 1x1 conv.
        backbone.blocks[-1] = nn.Identity()
    return backbone


class DeepLabV3Plus(SegmentationNet):
    encoder_prefixes = ("backbone.",)

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "lcnet_100",
        output_stride: int = 32,
        pretrained_backbone: bool | str = False,
    ):
        super().__init__()
        if output_stride not in ASPP_RATES:
            raise SegliteError(f"output_stride must be one of {sorted(ASPP_RATES)}, got {output_stride}")
        self.num_classes = num_classes
        self.stride = 32  # the backbone still needs sizes divisible by 32 at OS 8/16 (its stem and early stages)
        self.output_stride = output_stride
        self.backbone = build_backbone(backbone, output_stride, pretrained_backbone)
        with torch.no_grad():
            low, high = self.backbone(torch.zeros(1, 3, 64, 64))
        self.head = DeepLabV3PlusHead(low.shape[1], high.shape[1], num_classes, output_stride)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self.backbone(x)
        logits = self.head(low, high)
        return upsample_logits(logits, x.shape[-2:], align_corners=False)


for _backbone, _label in (
    ("lcnet_050", "lcnet_050"),
    ("lcnet_075", "lcnet_075"),
    ("lcnet_100", "lcnet_100"),
    ("mobilenetv3_large_050", "mnv3l_050"),
    ("mobilenetv3_large_075", "mnv3l_075"),
    ("mobilenetv3_large_100", "mnv3l_100"),
):
    register_model(
        f"deeplabv3p_{_label}",
        DeepLabV3Plus,
        f"DeepLabV3+ (PaddleSeg head, OS32) on timm {_backbone}",
        backbone=_backbone,
    )
