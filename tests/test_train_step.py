"""The training step's fast paths: the same step in channels_last and bf16, a precision trial that leaves no trace,
and the precision rules per device."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from seglite.errors import SegliteError
from seglite.models import fused
from seglite.models.layers import global_avg_pool
from seglite.models.registry import create_model
from seglite.training.config import load_config
from seglite.training.losses import SegmentationLoss
from seglite.training.step import StepOptions, TrainStep, faster_precision, time_precisions
from seglite.training.trainer import _optimizer, _param_groups, _precision


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 5, (2, 64, 128), generator=generator)
    labels[:, :4] = 255  # an ignored band, as padded crops have
    return torch.randn(2, 3, 64, 128, generator=generator), labels


def _step(model, options: StepOptions) -> TrainStep:
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return TrainStep(model, SegmentationLoss(), optimizer, None, torch.device("cpu"), options)


@pytest.mark.parametrize("name", ["espnetv2_s0.5", "deeplabv3p_lcnet_050"])
def test_channels_last_step_is_the_plain_step(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train()
    for module in model.modules():  # dropout draws its mask in memory order: NHWC would draw another mask
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    plain, fast = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = torch.optim.SGD(plain.parameters(), lr=0.05, momentum=0.9)
    step = _step(fast, StepOptions("fp32", channels_last=True))
    images, labels = _batch()
    loss = F.cross_entropy(plain(images), labels, ignore_index=255)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert step(images, labels).item() == pytest.approx(loss.item(), rel=1e-5)
    for (key, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), key  # the same update and BN statistics
    assert not fast.state_dict()[next(k for k, v in fast.state_dict().items() if v.ndim == 4)].is_contiguous()


def _layout(tensor: torch.Tensor) -> str | None:
    """ "nchw" or "nhwc" for a 4-d tensor whose two layouts differ in memory; None where it is ambiguous or broadcast."""
    if tensor.dim() != 4 or min(tensor.shape[1:]) == 1 or 0 in tensor.stride():
        return None
    if tensor.is_contiguous():
        return "nchw"
    return "nhwc" if tensor.is_contiguous(memory_format=torch.channels_last) else None


class _MixedLayoutAdds(TorchDispatchMode):
    """Records every add whose two tensor operands are laid out differently: ~15x slower than a same-layout add."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.add, torch.ops.aten.add_):
            layouts = {_layout(a) for a in args[:2] if isinstance(a, torch.Tensor)} - {None}
            if len(layouts) > 1:
                self.found.append(f"{func} {tuple(args[0].shape)}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    ("name", "allowed"),
    # timm's squeeze-excite blocks keep their mean: LCNet's last two (1/32 maps, ~1 % of a MobileNetV3 step in all)
    [("espnetv2_s0.5", 0), ("espnetv1", 0), ("deeplabv3p_lcnet_050", 2)],
)
def test_channels_last_backward_adds_no_gradients_across_layouts(name, allowed):
    """A global pooling's mean backward hands its input an NCHW gradient; summed with the NHWC ones from the input's
    other consumers, that add ran at ~1/15 the speed (seglite.models.layers.global_avg_pool)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train().to(memory_format=torch.channels_last)
    images, labels = _batch()
    loss = F.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)), labels, ignore_index=255)
    with _MixedLayoutAdds() as adds:
        loss.backward()
    assert len(adds.found) <= allowed, adds.found


def test_global_avg_pool_is_the_mean_with_a_broadcast_gradient():
    x = torch.randn(2, 8, 12, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    received = []
    x.register_hook(lambda grad: received.append(grad))
    pooled = global_avg_pool(x)
    assert torch.allclose(pooled, x.mean((2, 3), keepdim=True), atol=1e-6)
    weights = torch.randn(pooled.shape)
    (pooled * weights).sum().backward()
    assert torch.allclose(received[0], (weights / (12 * 16)).expand(x.shape))
    assert 0 in received[0].stride()  # a view of the pooled gradient, not an NCHW tensor of x's size
    with torch.no_grad():
        assert torch.equal(global_avg_pool(x), F.adaptive_avg_pool2d(x, 1))  # inference and export: the plain op


def test_bf16_step_follows_the_fp32_loss():
    torch.manual_seed(0)
    model = create_model("deeplabv3p_lcnet_050", num_classes=5).train()
    fp32, bf16 = _step(copy.deepcopy(model), StepOptions("fp32")), _step(copy.deepcopy(model), StepOptions("bf16"))
    for seed in range(3):
        images, labels = _batch(seed)
        torch.manual_seed(seed)
        a = fp32(images, labels).item()
        torch.manual_seed(seed)
        b = bf16(images, labels).item()
        assert b == pytest.approx(a, rel=0.05)
        assert b != a  # it did run in bf16


def test_precision_trial_leaves_no_trace():
    torch.manual_seed(0)
    model = create_model("espnetv2_s0.5", num_classes=5).train()
    before = copy.deepcopy(model.state_dict())
    seconds = time_precisions(model, SegmentationLoss(), *_batch(), [StepOptions("fp32"), StepOptions("bf16")])
    assert set(seconds) == {"fp32", "bf16"} and all(s > 0 for s in seconds.values())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert all(p.grad is None for p in model.parameters())
    assert faster_precision({"fp32": 1.0, "bf16": 0.5}) == "bf16"
    assert faster_precision({"fp32": 1.0, "bf16": 0.97}) == "fp32"  # a tie keeps fp32's numerics


def test_precision_rules_per_device(monkeypatch):
    cpu = torch.device("cpu")
    assert _precision(load_config(None, ["amp=none"]), cpu) == "fp32"
    assert _precision(load_config(None, ["amp=bf16"]), cpu) == "bf16"
    with pytest.raises(SegliteError, match="fp16 needs a CUDA GPU"):
        _precision(load_config(None, ["amp=fp16"]), cpu)
    monkeypatch.setattr("seglite.training.trainer.cpu_bf16_candidate", lambda device: False)
    assert _precision(load_config(None), cpu) == "fp32"
    monkeypatch.setattr("seglite.training.trainer.cpu_bf16_candidate", lambda device: True)
    assert _precision(load_config(None), cpu) is None  # decided by the first-batch trial


def test_optimizer_is_fused_with_the_same_update():
    torch.manual_seed(0)
    model = create_model("espnetv2_s0.5", num_classes=5)
    config = load_config(None, ["optim.name=adamw", "optim.lr=0.01"])
    fused = _optimizer(_param_groups(model, config), config, torch.device("cpu"))
    assert fused.defaults.get("fused") is True
    reference = copy.deepcopy(model)
    plain = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in _param_groups(reference, config)],
        lr=0.01,
    )
    for net, optimizer in ((model, fused), (reference, plain)):
        torch.manual_seed(1)
        net.train()
        F.cross_entropy(net(_batch()[0]), _batch()[1], ignore_index=255).backward()
        optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def _compiled_nodes(loss: torch.Tensor) -> int:
    """Nodes of the autograd graph that torch.compile made (the fused kernels' backward)."""
    seen, stack, count = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        count += "CompiledFunction" in type(node).__name__
        stack += [next_node for next_node, _ in node.next_functions]
    return count


@pytest.mark.skipif(not fused.compiler_found(), reason="the fused kernels need a C++ compiler (g++ or clang)")
@pytest.mark.parametrize(
    "name",
    [pytest.param("espnetv2_s0.5", marks=pytest.mark.slow), "espnetv1"],  # ESPNetv2's compile: 35 s
)
def test_fused_norm_step_is_the_eager_step(name):
    # Every BatchNorm(+residual)+PReLU of the network runs compiled: the same loss, updates and BN statistics.
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).train()
    eager, fast = _step(copy.deepcopy(model), StepOptions("fp32", True)), _step(model, StepOptions("fp32", True))
    images, labels = _batch()
    expected = eager(images, labels)
    with fused.fusing(True) as on:
        assert on
        loss = fast.loss(images, labels)
        fast.apply(loss)
    prelus = sum(isinstance(m, torch.nn.PReLU) and m.weight.requires_grad for m in model.modules())
    assert _compiled_nodes(loss) >= prelus  # one per fused BN+PReLU (ESPNet v1 adds BN-only ones)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    for (key, a), b in zip(eager.net.state_dict().items(), fast.net.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4), key
    assert not fused.enabled()  # only inside the block


def test_fused_norm_leaves_eval_mode_and_bf16_alone():
    torch.manual_seed(0)
    model = create_model("espnetv2_s0.5", num_classes=5)
    images, labels = _batch()
    with torch.no_grad():
        expected = model.eval()(images)
    with fused.fusing(True):
        with torch.no_grad():
            assert torch.equal(model(images), expected)
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images).float(), labels, ignore_index=255)
        assert _compiled_nodes(loss) == 0


def test_fused_norm_falls_back_to_eager_when_compiling_fails(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found")

    torch.manual_seed(0)
    model = create_model("espnetv2_s0.5", num_classes=5).train()
    twin = copy.deepcopy(model)
    images, _ = _batch()
    fused.enable(True)
    monkeypatch.setitem(fused._compiled, "bn_prelu", no_compiler)
    try:
        with pytest.warns(UserWarning, match="fused BatchNorm\\+PReLU unavailable.*InvalidCxxCompiler"):
            out = model(images)
    finally:
        fused.enable(False)
    assert torch.equal(out, twin(images))
    assert torch.equal(model.state_dict()["base_net.level1.bn.num_batches_tracked"], torch.tensor(1))
