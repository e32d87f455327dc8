"""Inference-time rewrites for eager PyTorch: fold BatchNorm into the convolution before it."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# Per block class, the (conv, norm) attribute pairs whose forward applies the norm straight to the conv's output
# (seglite's CBR/CB blocks and timm's efficientnet-family blocks, read from their forward methods).
_PAIRS_BY_CLASS = {
    "ConvBN": (("conv", "bn"),),
    "ConvBNPReLU": (("conv", "bn"),),
    "DepthwiseSeparableConv": (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    "InvertedResidual": (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
    "ConvBnAct": (("conv", "bn1"),),
    "MobileNetV3Features": (("conv_stem", "bn1"),),
    "EfficientNetFeatures": (("conv_stem", "bn1"),),
}


def _after_norm(norm: nn.Module) -> nn.Module:
    """What remains of a norm layer once its affine part moved into the conv (timm's BatchNormAct2d keeps drop+act)."""
    rest = [m for m in (getattr(norm, "drop", None), getattr(norm, "act", None)) if m is not None]
    return nn.Sequential(*rest) if rest else nn.Identity()


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and norm.track_running_stats
        and conv.out_channels == norm.num_features
    )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` (eval mode) with every BatchNorm that directly follows a conv folded into it.

    Only pairs whose order is certain are folded: adjacent items of an nn.Sequential, seglite's
    ConvBN/ConvBNPReLU, and timm's efficientnet-style blocks; everything else is left as it is.
    """
    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module._modules)
            for first, second in zip(children, children[1:], strict=False):
                conv, norm = module._modules[first], module._modules[second]
                if _foldable(conv, norm) and type(norm) is nn.BatchNorm2d:
                    module._modules[first] = fuse_conv_bn_eval(conv, norm)
                    module._modules[second] = nn.Identity()
        else:
            for conv_name, norm_name in _PAIRS_BY_CLASS.get(type(module).__name__, ()):
                conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
                if conv is not None and norm is not None and _foldable(conv, norm):
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                    setattr(module, norm_name, _after_norm(norm))
    return model
