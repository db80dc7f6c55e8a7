"""Vision transformers: token and channels-last maps found by the probe, read as (B, C, h, w) grids."""
from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import jittercam
from jittercam import JitterCamError
from jittercam.card import ModelCard, attach_card
from jittercam.methods import GradCAM, HiResCAM, LayerCAM, XGradCAM
from jittercam.probe import find_target_layer

timm = pytest.importorskip("timm")


def vit(name: str = "vit_tiny_patch16_224", size: int = 224, **options) -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, img_size=size, **options).eval()
    return attach_card(model, ModelCard(name, input_size=size))


@pytest.mark.parametrize("name, prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_a_class_token_vit_is_explained_at_the_last_attentions_input(name, prefix):
    """The last block's output grid tokens get no gradient (the head reads the class token), so the layer
    is the input of the last block's attention, pytorch-grad-cam's documented choice."""
    model = vit(name)
    layer = find_target_layer(model)
    assert (layer.name, layer.layout, layer.prefix, layer.grid) == ("blocks.11.norm1", "tokens", prefix, (14, 14))
    assert (layer.map_size, layer.stride, layer.rectify) == (14, 16, False)
    maps = GradCAM(model)(torch.randn(2, 3, 224, 224), 3)
    assert maps.shape == (2, 14, 14) and bool((maps > 0).any())


def test_an_attention_matrix_is_never_the_map():
    model = vit()
    for block in model.blocks:
        block.attn.fused_attn = False  # the attention weights become a module's output (attn_drop)
    assert find_target_layer(model).name == "blocks.11.norm1"
    with pytest.raises(JitterCamError, match=r"'blocks.11.attn.attn_drop'.*attention matrix"):
        find_target_layer(model, "blocks.11.attn.attn_drop")


def test_an_average_pooled_vit_with_register_tokens_is_explained_at_its_last_tokens():
    model = vit(size=64, global_pool="avg", class_token=False, reg_tokens=4)
    layer = find_target_layer(model)
    assert (layer.layout, layer.prefix, layer.grid, layer.stride) == ("tokens", 4, (4, 4), 16)
    assert layer.name in ("norm", "blocks.11")  # timm's norm is an Identity before the pooling here
    assert GradCAM(model)(torch.randn(1, 3, 64, 64), 0).shape == (1, 4, 4)


def test_swin_is_explained_at_its_channels_last_final_norm():
    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval()
    layer = find_target_layer(model)
    assert (layer.name, layer.layout, layer.grid, layer.stride) == ("norm", "nhwc", (7, 7), 32)
    maps = GradCAM(model)(torch.randn(1, 3, 224, 224), 5)
    assert maps.shape == (1, 7, 7) and bool((maps > 0).any())


def reshape_transform(tensor, height=14, width=14):
    """pytorch-grad-cam's documented reshape for a ViT (its tutorial, vision_transformers.md)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize("ours, theirs", [(GradCAM, "GradCAM"), (HiResCAM, "HiResCAM"), (XGradCAM, "XGradCAM"),
                                          (LayerCAM, "LayerCAM")])
def test_gradient_cams_on_a_vit_equal_pytorch_grad_cam_with_its_reshape(ours, theirs):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = vit(depth=2)
    images = torch.randn(2, 3, 224, 224)
    expected_layer = model.blocks[-1].norm1
    mine = ours(model)
    assert mine.layer.module is expected_layer
    cam = getattr(pgc, theirs)(model=model, target_layers=[expected_layer], reshape_transform=reshape_transform)
    targets = [ClassifierOutputTarget(7), ClassifierOutputTarget(7)]
    cam(input_tensor=images, targets=targets)
    activations = cam.activations_and_grads.activations[0].numpy()
    gradients = cam.activations_and_grads.gradients[0].numpy()
    raw = np.maximum(cam.get_cam_image(images, expected_layer, targets, activations, gradients, False), 0)
    cam.activations_and_grads.release()
    maps = mine(images, 7)
    assert maps.shape == (2, 14, 14)
    assert torch.allclose(maps, torch.from_numpy(raw).float(), rtol=1e-4, atol=1e-4 * float(maps.abs().max()))


@pytest.mark.parametrize("method", ["scorecam", "ablationcam", "gradcam++"])
def test_every_layer_method_runs_on_a_token_grid(method):
    model = vit(size=64, depth=2)
    maps = jittercam.create(method, model)(torch.randn(1, 3, 64, 64), 2)
    assert maps.shape == (1, 4, 4) and bool(torch.isfinite(maps).all())


def test_jitter_cam_over_tokens_is_eqs_1_and_2_of_the_base_maps():
    """Patch stride = the network's stride (16): a 4 × 4 grid at 64 px gives 8 × 8 from 25 crops of 64 px,
    at the model's own input size, so a fixed-size ViT works."""
    model = vit(size=64, depth=2)
    images = torch.randn(1, 3, 64, 64)
    jitter = jittercam.create("jittercam", model)
    maps = jitter(images, 4)
    assert maps.shape == (1, 8, 8)
    base = GradCAM(model)
    enlarged = F.interpolate(images, size=64 + 4 * 16, mode="bilinear", align_corners=False)
    total, count = torch.zeros(8, 8), torch.zeros(8, 8)
    for i in range(5):
        for j in range(5):
            crop = enlarged[:, :, 16 * i : 16 * i + 64, 16 * j : 16 * j + 64]
            total[i : i + 4, j : j + 4] += base(crop, 4)[0]
            count[i : i + 4, j : j + 4] += 1
    assert torch.allclose(maps[0], total / count, rtol=1e-4, atol=1e-7)


def test_jitter_cam_on_vit_tiny_at_224_doubles_the_14x14_grid():
    model = vit(depth=2)
    maps = jittercam.create("jittercam", model, batch_size=64)(torch.randn(1, 3, 224, 224), 1)
    assert maps.shape == (1, 28, 28)


@pytest.mark.parametrize("method, pixels", [("upscale", 128), ("cameras", 96)])  # 93 rounded to the stride 16
def test_methods_that_resize_the_input_refuse_a_fixed_size_vit_in_one_line_when_built(method, pixels):
    model = vit(size=64, depth=2)
    with pytest.raises(JitterCamError, match=rf"runs the model at {pixels}x{pixels} pixels, which it does not accept"):
        jittercam.create(method, model)  # before any call: the CLI writes nothing
    assert not model.training


def test_upscale_cam_uses_a_vit_that_takes_other_sizes():
    model = vit(size=64, depth=2, dynamic_img_size=True)
    assert jittercam.create("upscale", model)(torch.randn(1, 3, 64, 64), 0).shape == (1, 8, 8)


class NormFeedsPooling(nn.Module):
    """A hybrid's ending (CoAtNet, MaxViT): a norm that feeds the pooling directly, or through F.relu
    (DenseNet)."""

    def __init__(self, functional_relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)
        self.functional_relu = functional_relu

    def forward(self, x):
        x = self.norm(self.conv(x))
        x = F.relu(x) if self.functional_relu else x
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize("functional_relu", [True, False])
def test_a_norm_is_rectified_only_where_the_network_rectifies_it(functional_relu):
    torch.manual_seed(0)
    model = NormFeedsPooling(functional_relu).eval()
    layer = find_target_layer(model, input_size=32)
    assert (layer.name, layer.rectify) == ("norm", functional_relu)


def test_coatnet_final_layernorm_is_not_rectified():
    torch.manual_seed(0)
    model = timm.create_model("coatnet_nano_rw_224", pretrained=False).eval()
    layer = find_target_layer(model)
    assert (layer.name, layer.layout, layer.rectify) == ("norm", "nchw", False)


class PatchEmbeddingThenLinears(nn.Module):
    """A patch embedding whose grid the rest of the network does not keep: no map to explain."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 4, 8, stride=8)
        self.mlp = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x):
        return self.mlp(self.embed(x).flatten(1))


def test_a_patch_embedding_with_the_network_after_it_is_refused():
    with pytest.raises(JitterCamError, match=r"'embed' \(4x4\).*run after it.*pass target_layer="):
        find_target_layer(PatchEmbeddingThenLinears(), input_size=32)


def test_efficientformer_is_explained_at_its_final_tokens_and_refuses_other_sizes_in_one_line():
    """Its last stage is attention over a 7 × 7 token grid, then the final norm: that norm is the layer,
    not a block with the attention still after it; its attention biases fix the input size."""
    torch.manual_seed(0)
    model = timm.create_model("efficientformer_l1", pretrained=False).eval()
    layer = find_target_layer(model)
    assert (layer.name, layer.layout, layer.prefix, layer.grid) == ("norm", "tokens", 0, (7, 7))
    assert GradCAM(model)(torch.randn(1, 3, 224, 224), 0).shape == (1, 7, 7)
    with pytest.raises(JitterCamError, match=r"^Upscale-CAM runs the model at 448x448 pixels, which it does not"):
        jittercam.create("upscale", model)(torch.randn(1, 3, 224, 224), 0)


def test_score_cam_on_a_vit_equals_pytorch_grad_cam_with_its_reshape():
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = vit(size=64, depth=2, embed_dim=32, num_heads=2)
    layer = model.blocks[-1].norm1
    images = torch.randn(2, 3, 64, 64)
    peer = pgc.ScoreCAM(model=model, target_layers=[layer], reshape_transform=partial(reshape_transform, height=4,
                                                                                       width=4))
    peer.batch_size = 32
    expected = torch.from_numpy(peer(input_tensor=images, targets=[ClassifierOutputTarget(3)] * 2)).float()
    method = jittercam.create("scorecam", model, variant="pytorch-grad-cam", batch_size=32)
    assert method.layer.module is layer and method.passes() == 32
    torch.testing.assert_close(jittercam.upsample(method(images, 3), 64), expected, atol=5e-5, rtol=0)


def test_ablation_cam_on_a_vit_zeroes_a_channel_of_the_grid_tokens():
    """Desai & Ramaswamy's w_k = (y_c - y_c^k) / y_c with channel k of the map zeroed: on a token layer the
    map is the grid tokens (the class token is no position of the map and keeps its value). pytorch-grad-cam's
    `AblationLayerVit` instead sets the channel of every token to min - 1e7 when the layer has negative values
    (its own comment: "deviating from the paper"), so the two are not compared."""
    model = vit(size=64, depth=2, embed_dim=32, num_heads=2)
    images = torch.randn(1, 3, 64, 64)
    method = jittercam.create("ablationcam", model, closed_form=False)
    maps = method(images, 3)
    layer = method.layer
    with torch.no_grad():
        base = model(images)[0, 3]
        captured = {}
        handle = layer.module.register_forward_hook(lambda m, i, o: captured.setdefault("out", o.clone()))
        model(images)
        handle.remove()
        tokens = captured["out"]
        grid = layer.to_map(tokens)[0]  # (C, 4, 4)
        weights = []
        for k in range(grid.shape[0]):
            ablated = grid.clone()
            ablated[k] = 0
            replaced = layer.from_map(ablated[None], tokens)
            handle = layer.module.register_forward_hook(lambda m, i, o, r=replaced: r)
            weights.append((base - model(images)[0, 3]) / base)
            handle.remove()
        expected = torch.einsum("c,chw->hw", torch.stack(weights), grid).relu()
    torch.testing.assert_close(maps[0], expected, rtol=1e-4, atol=1e-5)
