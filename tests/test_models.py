"""The networks: exact published parameter counts, any input size, gradients, determinism, ONNX."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import seglite
from seglite.bench.complexity import count_flops, count_parameters
from seglite.errors import SegliteError, UnknownModelError
from seglite.inference.onnx_export import OPSET, OnnxRunner, export_onnx, ort_session, upsample_planes

ALL_MODELS = seglite.list_models()

# Published counts (sum of all nn.Parameters; BN running buffers excluded): ../shared/research/espnet.md §1.6, §2.5.
PUBLISHED_PARAMS = {
    ("espnetv1", 19): 362_949,
    ("espnetv1", 20): 364_569,
    ("espnetv1_c", 19): 349_193,
    ("espnetv1_c", 20): 349_449,
    ("espnetv2_s0.5", 19): 79_452,
    ("espnetv2_s0.5", 20): 80_342,
    ("espnetv2_s1.0", 19): 232_992,
    ("espnetv2_s1.0", 20): 234_010,
    ("espnetv2_s1.5", 19): 467_216,
    ("espnetv2_s1.5", 20): 468_362,
    ("espnetv2_s2.0", 19): 787_968,
    ("espnetv2_s2.0", 20): 789_242,
}


@pytest.mark.parametrize(("name", "classes"), sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_the_papers(name, classes):
    assert count_parameters(seglite.create_model(name, num_classes=classes)) == PUBLISHED_PARAMS[(name, classes)]


def test_seglite_models_lists_each_network_with_its_published_weights():
    import json

    from conftest import cli

    result = cli("models", "--json", "--size", "256x128")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(ALL_MODELS)
    assert rows["espnetv2_s1.0"]["published_weights"] == [
        "espnetv2_s1.0_cityscapes_1024x512",
        "espnetv2_s1.0_cityscapes_512x256",
    ]
    assert (
        rows["deeplabv3p_lcnet_050"]["published_weights"] == []
        and "lcnet_050" in rows["deeplabv3p_lcnet_050"]["description"]
    )
    table = cli("models", "--size", "256x128").stdout
    line = next(line for line in table.splitlines() if "│ espnetv1 " in line)
    assert "3 (Cityscapes)" in line and "ESPNet with the light decoder" in line


def test_espnet_q_override_gives_the_q3_count():
    # q=3 variant of the released checkpoints: 201,029 parameters with 19 classes (espnet.md §1.6).
    assert count_parameters(seglite.create_model("espnetv1", q=3)) == 201_029


def test_deeplab_heads_are_paddleseg_sized():
    # PaddleSeg-equivalent OS32 head on timm backbones: about 1.10 / 2.18 M (lcnet 0.5x / 1.0x) and
    # 1.35 / 3.52 M (MobileNetV3-L 0.5x / 1.0x) in deeplab_lcnet.md §5.3; Paddle keeps conv biases we drop.
    expected = {
        "deeplabv3p_lcnet_050": 1.098e6,
        "deeplabv3p_lcnet_100": 2.182e6,
        "deeplabv3p_mnv3l_050": 1.349e6,
        "deeplabv3p_mnv3l_100": 3.517e6,
    }
    for name, count in expected.items():
        assert abs(count_parameters(seglite.create_model(name)) - count) / count < 0.005, name


def test_espnet_flops_match_the_research_counts():
    # MACs at 1024x512, C=19, all convs: ESPNet 4.60 G, ESPNetv2 s2.0 2.665 G (espnet.md §1.6, §2.5).
    assert count_flops(seglite.create_model("espnetv1")) / 2e9 == pytest.approx(4.60, abs=0.01)
    assert count_flops(seglite.create_model("espnetv2_s2.0")) / 2e9 == pytest.approx(2.665, abs=0.005)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_logits_come_back_at_the_input_size(name):
    model = seglite.create_model(name).eval()
    with torch.inference_mode():
        for width, height in ((1024, 512), (2048, 1024), (1000, 500), (511, 257)):
            out = model(torch.randn(1, 3, height, width))
            assert out.shape == (1, 19, height, width), (width, height)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_backward_reaches_every_trainable_parameter(name):
    model = seglite.create_model(name).train()
    out = model(torch.randn(2, 3, 96, 160))
    loss = torch.nn.functional.cross_entropy(out, torch.randint(0, 19, (2, 96, 160)))
    loss.backward()
    for pname, param in model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_mode_is_deterministic(name):
    model = seglite.create_model(name).eval()
    x = torch.randn(1, 3, 128, 256)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize(
    ("name", "size"),
    [(name, (512, 256)) for name in ALL_MODELS]
    # sizes the nets pad to their stride: CamVid's frames, a small user's frames (ESPNetv2 failed to export both)
    + [("espnetv2_s0.5", (480, 360)), ("espnetv2_s2.0", (200, 150)), ("espnetv1", (480, 360))],
)
def test_onnx_export_static_shape_agrees_with_pytorch(name, size):
    torch.manual_seed(0)
    model = seglite.create_model(name).eval()
    _randomize_batchnorm(model)
    data = export_onnx(model, size)
    import onnx

    proto = onnx.load_from_string(data)
    assert proto.opset_import[0].version >= OPSET
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, size[1], size[0]]
    x = torch.randn(1, 3, size[1], size[0])
    with torch.inference_mode():
        expected = model(x).numpy()
    got = ort_session(data, threads=2).run(None, {"image": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999


def test_a_failed_onnx_export_is_one_line_without_the_exporters_dump(capfd):
    class Unexportable(torch.nn.Conv2d):
        def forward(self, x):
            os.write(2, b"Torch IR graph at exception: graph(%x.1 : Float(1, 3, 32, 64))\n")  # as the C++ exporter
            raise RuntimeError("Failed to export a node\n(in list node %955) because it is not constant")

    with pytest.raises(SegliteError) as failure:
        export_onnx(Unexportable(3, 2, 1), (64, 32))
    assert str(failure.value) == "ONNX export of model at 64x32 failed: Failed to export a node"
    assert "Torch IR graph" not in capfd.readouterr().err


@pytest.mark.parametrize(
    "name, size, left_out",
    [
        ("deeplabv3p_lcnet_050", (512, 256), True),
        ("espnetv1_c", (512, 256), True),
        ("deeplabv3p_lcnet_050", (500, 250), False),  # padded input: the crop needs the upsampled logits
        ("espnetv2_s0.5", (512, 256), False),  # align_corners=True: not OpenCV's formula
        ("espnetv1", (512, 256), False),  # ends with a transposed conv
    ],
)
def test_runner_does_the_final_upsampling_the_export_left_out(name, size, left_out):
    torch.manual_seed(0)
    model = seglite.create_model(name).eval()
    _randomize_batchnorm(model)
    data = export_onnx(model, size, batch=2, final_upsample_outside=True)
    runner = OnnxRunner(data, threads=2)
    assert (runner.final_size is not None) == left_out
    x = torch.randn(2, 3, size[1], size[0])
    with torch.inference_mode():
        expected = model(x).numpy()
    got = runner(x.numpy())
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    if left_out:  # the graph itself stops at the network's resolution
        graph_out = runner.session.run(None, {"image": x.numpy()})[0]
        assert graph_out.shape[-1] < size[0] and graph_out.shape[-2] < size[1]


@pytest.mark.parametrize("shape, size", [((2, 19, 128, 256), (512, 1024)), ((1, 3, 19, 37), (64, 100))])
def test_upsample_planes_matches_pytorch_half_pixel_bilinear(shape, size):
    logits = torch.randn(shape)
    expected = torch.nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False).numpy()
    got = upsample_planes(logits.numpy(), size)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_batchnorm_folding_keeps_the_outputs(name):
    from seglite.inference.optimize import fold_batchnorm

    model = seglite.create_model(name).eval()
    _randomize_batchnorm(model)
    folded = fold_batchnorm(model)
    count = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert count(folded) < count(model)
    x = torch.randn(1, 3, 128, 256)
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert torch.allclose(expected, got, atol=1e-4, rtol=1e-4)


def _randomize_batchnorm(model: torch.nn.Module) -> None:
    # Fresh BN statistics make logits nearly constant; random ones give argmax something to agree on.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)


def test_unknown_model_names_the_closest_ones():
    with pytest.raises(UnknownModelError, match="espnetv2_s1.0"):
        seglite.create_model("espnetv2_s1")


def test_kwargs_override_defaults():
    model = seglite.create_model("deeplabv3p_lcnet_050", output_stride=16).eval()
    assert model.output_stride == 16
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


def test_pretrained_backbone_offline_fails_with_a_clear_message(tmp_path):
    missing = tmp_path / "lcnet_050.pth"
    with pytest.raises(seglite.SegliteError, match="could not load ImageNet weights"):
        seglite.create_model("deeplabv3p_lcnet_050", pretrained_backbone=str(missing))


def test_pretrained_backbone_loads_a_local_timm_file(tmp_path):
    import timm

    reference = timm.create_model("lcnet_050")
    path = tmp_path / "lcnet_050.pth"
    torch.save(reference.state_dict(), path)
    model = seglite.create_model("deeplabv3p_lcnet_050", pretrained_backbone=str(path))
    stem = dict(model.backbone.named_parameters())["conv_stem.weight"]
    assert torch.equal(stem, reference.conv_stem.weight)


def test_each_family_lives_in_one_file():
    from seglite.models import registry

    families = {registry.get_spec(name).builder.__module__ for name in ALL_MODELS}
    assert families == {"seglite.models.espnet", "seglite.models.espnetv2", "seglite.models.deeplab"}


def _randomize_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in (
                (module.running_mean, -0.5, 0.5),
                (module.running_var, 0.5, 2.0),
                (module.weight.data, 0.5, 1.5),
                (module.bias.data, -0.2, 0.2),
            ):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)


@pytest.mark.parametrize(
    ("name", "output_stride", "batch", "size"),
    [("deeplabv3p_lcnet_050", 32, 1, (256, 512)), ("deeplabv3p_mnv3l_050", 16, 2, (192, 320))],
)
def test_deeplab_inference_head_equals_upsample_concat_separable(name, output_stride, batch, size):
    """Eval mode never builds the upsampled context (seglite.models.deeplab.upsample_then_separable): same logits
    as the textbook upsample -> concat -> separable conv path that training runs, with BN folded or not."""
    from seglite.inference.optimize import fold_batchnorm
    from seglite.models.deeplab import DeepLabV3PlusHead

    torch.manual_seed(0)
    model = seglite.create_model(name, output_stride=output_stride).eval()
    _randomize_batchnorm(model)
    image = torch.randn(batch, 3, *size)
    with torch.no_grad():
        fast = model(image)
        head = model.head
        head.training = True  # only the head's own branch flag: its BN and dropout stay in eval mode
        textbook = model(image)
        head.training = False
        folded = fold_batchnorm(model)(image)
    assert isinstance(head, DeepLabV3PlusHead)
    scale = textbook.abs().max()
    assert (fast - textbook).abs().max() <= 1e-5 * scale
    assert (folded - textbook).abs().max() <= 1e-5 * scale
    assert (fast.argmax(1) == textbook.argmax(1)).float().mean() >= 0.999


def test_conv_parts_equals_the_conv_of_the_concatenation():
    from seglite.models.espnet import conv_parts

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(35, 19, 3, stride=2, padding=1, bias=True)
    parts = [torch.randn(2, 19, 24, 40), torch.randn(2, 16, 24, 40)]
    with torch.no_grad():
        expected = conv(torch.cat(parts, 1))
        assert torch.allclose(conv_parts(conv, parts), expected, atol=1e-5)


@pytest.mark.parametrize("name", ["espnetv1", "espnetv1_c"])
def test_espnet_inference_path_equals_the_concatenating_one(name):
    """Eval mode never builds the b1/b2 concatenations (seglite.models.espnet.bnprelu_parts): same logits as the
    authors' concatenate -> BN+PReLU -> conv path that training runs, with BN folded or not."""
    from seglite.inference.optimize import fold_batchnorm

    torch.manual_seed(0)
    model = seglite.create_model(name).eval()
    _randomize_batchnorm(model)
    image = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        fast = model(image)
        folded = fold_batchnorm(model)(image)
        for module in model.modules():  # the textbook branch, BN still with its running statistics
            module.training = not isinstance(module, torch.nn.BatchNorm2d)
        textbook = model(image)
    scale = textbook.abs().max()
    assert (fast - textbook).abs().max() <= 1e-5 * scale
    assert (folded - textbook).abs().max() <= 1e-5 * scale
    assert (fast.argmax(1) == textbook.argmax(1)).float().mean() >= 0.999


@pytest.mark.parametrize("size_in, size_out", [((32, 64), (48, 96)), ((13, 27), (5, 4)), ((16, 32), (8, 16))])
def test_matrix_pooling_equals_adaptive_avg_pool(size_in, size_out):
    # Core ML, ExecuTorch and LiteRT exports write ESPNetv2's pyramid pooling this way (matrix_pooling=True).
    from seglite.models.base import portable_graph
    from seglite.models.layers import adaptive_avg_pool

    x = torch.randn(2, 5, *size_in)
    with portable_graph(matrix_pooling=True):
        pooled = adaptive_avg_pool(x, size_out)
        traced = torch.jit.trace(lambda t: adaptive_avg_pool(t, size_out), x)
    expected = torch.nn.functional.adaptive_avg_pool2d(x, size_out)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traced(x), expected, rtol=1e-5, atol=1e-5)
    kinds = {node.kind() for node in traced.graph.nodes()}
    if size_in[0] % size_out[0] or size_in[1] % size_out[1]:
        assert "aten::matmul" in kinds and "aten::adaptive_avg_pool2d" not in kinds
        assert not any("copy_" in kind or "index_put" in kind for kind in kinds)  # the matrices are constants


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("size_in, size_out", [((7, 9), (20, 31)), ((20, 31), (7, 9)), ((18, 24), (72, 96))])
def test_training_resize_is_interpolate_in_values_gradients_and_layout(size_in, size_out, channels_last, align_corners):
    from seglite.models.base import bilinear_resize

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 5, *size_in, dtype=torch.float64).contiguous(memory_format=memory_format)
    ours, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    got = bilinear_resize(ours, size_out, align_corners)
    expected = torch.nn.functional.interpolate(reference, size_out, mode="bilinear", align_corners=align_corners)
    upstream = torch.randn_like(expected)
    got.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-12, atol=1e-12)
    assert got.is_contiguous(memory_format=memory_format)  # the next conv reads it without a copy
    # without a gradient to compute (inference, export), the resize is PyTorch's own op
    with torch.no_grad():
        traced = torch.jit.trace(lambda t: bilinear_resize(t, size_out, align_corners), x)
    assert "aten::upsample_bilinear2d" in {node.kind() for node in traced.graph.nodes()}


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [2, 3, 4])
def test_dilated_depthwise_training_conv_is_pytorchs_in_values_gradients_and_layout(dilation, stride, channels_last):
    from seglite.models.layers import dilated_conv

    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    ours = dilated_conv(6, 6, dilation, stride, groups=6).to(memory_format=memory_format)
    reference = torch.nn.Conv2d(6, 6, 3, stride, dilation, dilation, groups=6, bias=False)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 6, 17, 22).contiguous(memory_format=memory_format)  # odd sizes: strided outputs miss a row
    mine, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    received = []
    into_conv = mine * 1.0  # the gradient the conv hands its input, before autograd restrides a leaf's
    into_conv.register_hook(received.append)
    got, expected = ours(into_conv), reference(theirs)
    assert ("DilatedDepthwise" in got.grad_fn.name()) == channels_last  # the fast backward is used channels-last only
    wider = torch.randn(*expected.shape[:3], expected.shape[3] + 3).contiguous(memory_format=memory_format)
    upstream = wider[..., 1:-2]  # a strided view, as a slice of a concatenation's gradient is
    got.backward(upstream)
    expected.backward(upstream)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, reference.weight.grad, rtol=1e-5, atol=1e-4)
    assert received[0].is_contiguous(memory_format=memory_format)  # adds to the input's other gradients at full speed
    with torch.no_grad():  # inference and export: PyTorch's own conv
        kinds = {node.kind() for node in torch.jit.trace(ours, x).graph.nodes()}
    assert "aten::_convolution" in kinds and "prim::PythonOp" not in kinds
