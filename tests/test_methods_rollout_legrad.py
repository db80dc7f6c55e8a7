"""Attention rollout against jacobgil/vit-explain's definition and LeGrad against torchcam and autograd, on timm
and torchvision ViTs (attention matrices unfused on a copy), the paper's normalisation by hand, refusals."""
from __future__ import annotations

import copy

import pytest
import torch

import jittercam
from jittercam import JitterCamError
from jittercam.methods.legrad import LeGrad
from jittercam.methods.rollout import AttentionRollout

timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=3, num_classes=10).eval()


def _explicit_attentions(model, x):
    """Per block, the attention probabilities timm itself forms (its `attn_drop` input) on a copy of the model
    with fused attention off — the matrices vit-explain hooks."""
    twin = copy.deepcopy(model)
    recorded = []
    for block in twin.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda _m, _i, output: recorded.append(output.detach()))
    with torch.no_grad():
        twin(x)
    return recorded


def _vit_explain(attentions, image, discard_ratio, head_fusion):
    """vit-explain's `rollout` for image `image` of the batch, step by step as it defines it (one image at a
    time: its discarding touches the batch's first image only)."""
    result = torch.eye(attentions[0].size(-1))
    for attention in attentions:
        heads = attention[image : image + 1]
        fused = {"mean": heads.mean(dim=1), "max": heads.max(dim=1)[0], "min": heads.min(dim=1)[0]}[head_fusion]
        flat = fused.view(fused.size(0), -1)
        _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
        indices = indices[indices != 0]
        flat[0, indices] = 0
        a = (fused + torch.eye(fused.size(-1))) / 2
        a = a / a.sum(dim=-1)
        result = torch.matmul(a, result)
    return result[0, 0, 1:]


@pytest.mark.parametrize("head_fusion, discard_ratio", [("mean", 0.9), ("max", 0.5), ("min", 0.0)])
def test_equals_vit_explain_on_a_timm_vit(vit, head_fusion, discard_ratio):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    attentions = _explicit_attentions(vit, x)
    method = AttentionRollout(vit, head_fusion=head_fusion, discard_ratio=discard_ratio, variant="vit-explain")
    got = method(x, [1, 4, 7])  # class-agnostic: the targets are ignored
    assert got.shape == (3, 4, 4)
    for image in range(3):
        expected = _vit_explain(attentions, image, discard_ratio, head_fusion).reshape(4, 4)
        # the peer's post-processing, max-scaling, applied to both
        torch.testing.assert_close(got[image] / got[image].max(), expected / expected.max(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(method(x), got)


def test_paper_rollout_renormalises_rows(vit):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    result = torch.eye(17).expand(2, 17, 17)
    for attention in _explicit_attentions(vit, x):
        a = (attention.mean(dim=1) + torch.eye(17)) / 2
        result = (a / a.sum(dim=-1, keepdim=True)) @ result
    got = AttentionRollout(vit)(x)
    torch.testing.assert_close(got, result[:, 0, 1:].reshape(2, 4, 4), rtol=1e-5, atol=1e-7)
    assert torch.allclose(result.sum(dim=-1), torch.ones(2, 17), atol=1e-5)  # the rows stay distributions


def test_model_untouched_and_registered(vit):
    assert all(block.attn.fused_attn for block in vit.blocks)
    AttentionRollout(vit)(torch.randn(1, 3, 64, 64))
    assert all(block.attn.fused_attn and not block.attn.qkv._forward_hooks for block in vit.blocks)
    assert "rollout" in jittercam.available_methods()
    assert AttentionRollout(vit).passes() == 1


def test_refusals_in_one_line(vit):
    torch.manual_seed(0)
    resnet = jittercam.load_model("resnet18", weights="random")
    pooled = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, depth=1, num_classes=10,
                               class_token=False, global_pool="avg")
    for model in (resnet, pooled):
        with pytest.raises(JitterCamError, match="rollout needs a vision transformer") as error:
            AttentionRollout(model)
        assert "\n" not in str(error.value)
    for options, option in (({"head_fusion": "sum"}, "head_fusion"), ({"discard_ratio": 1.0}, "discard_ratio"),
                            ({"variant": "x"}, "variant")):
        with pytest.raises(JitterCamError) as error:
            AttentionRollout(vit, **options)
        assert str(error.value).startswith(option)


@pytest.fixture(scope="module")
def torchvision_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=64, patch_size=16, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.2)  # torchvision starts the head at zero
    return model


@pytest.mark.parametrize("last", [None, 2])
def test_legrad_torchcam_variant_equals_torchcam_on_a_torchvision_vit(torchvision_vit, last):
    torchcam = pytest.importorskip("torchcam.methods")
    model = torchvision_vit
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    target = [3, 7, 1]
    blocks = list(model.encoder.layers)[-(last or 3):]
    with torchcam.LeGrad(model, blocks) as peer:
        model(x)
        expected = peer(class_idx=target, normalized=False)[0]
    got = LeGrad(model, blocks=last, variant="torchcam")(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert all(p.grad is None for p in model.parameters())


def _explicit_legrad(model, x, target, score):
    """LeGrad by autograd through the attention matrices timm forms with fused attention off (on a copy)."""
    twin = copy.deepcopy(model)
    attentions, tokens = [], []
    for block in twin.blocks:
        block.attn.fused_attn = False
        block.attn.attn_drop.register_forward_hook(lambda _m, _i, output: attentions.append(output))
        block.register_forward_hook(lambda _m, _i, output: tokens.append(output))
    twin(x)
    maps = []
    for attention, z in zip(attentions, tokens):
        s = score(twin, z).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(s, attention, retain_graph=True)
        maps.append(grad.relu().mean(dim=(1, 2))[:, 1:])
    return torch.stack(maps).mean(dim=0).reshape(-1, 4, 4).detach()


@pytest.mark.parametrize("variant, score", [
    ("paper", lambda m, z: m.forward_head(m.norm(z))),
    ("torchcam", lambda m, z: m.head(m.fc_norm(m.norm(z.mean(dim=1))))),
])
def test_legrad_on_a_timm_vit_is_the_gradient_at_its_attention_matrices(vit, variant, score):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([2, 5])
    expected = _explicit_legrad(vit, x, target, score)
    got = LeGrad(vit, variant=variant)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert expected.abs().max() > 0
    assert all(p.grad is None for p in vit.parameters()) and all(b.attn.fused_attn for b in vit.blocks)


def test_legrad_refusals(vit):
    torch.manual_seed(0)
    with pytest.raises(JitterCamError, match=r"legrad needs a vision transformer .*; ResNet has none$"):
        LeGrad(jittercam.load_model("resnet18", weights="random"))
    with pytest.raises(JitterCamError) as error:
        LeGrad(vit, blocks=4)
    assert str(error.value).startswith("blocks")
    with pytest.raises(JitterCamError) as error:
        LeGrad(vit, variant="x")
    assert str(error.value).startswith("variant")
    assert "legrad" in jittercam.available_methods()


@pytest.mark.parametrize("name", ["rollout", "legrad"])
def test_contract_on_a_vit(vit, name):
    """tests/test_contract.py's checks, on a ViT (both methods refuse its tiny CNN)."""
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    targets = [1, 3, 0]
    before = vit(x)
    method = jittercam.create(name, vit)
    maps = method(x, targets)
    assert maps.shape == (3, 4, 4) and torch.isfinite(maps).all()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in vit.modules())
    assert hooks == 0 and not vit.training and all(p.grad is None for p in vit.parameters())
    torch.testing.assert_close(vit(x), before, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(method(x, targets), maps, rtol=1e-5, atol=1e-7)
    with torch.inference_mode():
        torch.testing.assert_close(method(x.clone(), targets), maps, rtol=1e-5, atol=1e-7)
    assert torch.is_grad_enabled()
    one_by_one = jittercam.create(name, vit, batch_size=1)
    alone = torch.cat([one_by_one(x[i : i + 1], t) for i, t in enumerate(targets)])
    torch.testing.assert_close(alone, maps, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(method(x), method(x, vit(x).argmax(dim=1)))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_is_recorded_as_the_module_computes_it(batch_first):
    from jittercam.methods.rollout import AttentionRecorder, attention_modules

    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[:, 4] = True  # an attn_mask is applied as the module applies it
    for given in (None, mask):
        with torch.no_grad(), AttentionRecorder(attention_modules(attention)) as recorder:
            _, weights = attention(x, x, x, attn_mask=given, need_weights=True, average_attn_weights=False)
        assert len(recorder.attentions) == 1
        torch.testing.assert_close(recorder.attentions[0], weights, rtol=1e-5, atol=1e-6)
    assert not attention._forward_pre_hooks  # removed on leaving


def test_rollout_on_torchvision_and_hand_written_vits():
    from torchvision.models import VisionTransformer

    from jittercam.groundtruth.model import GroundTruthViT
    from jittercam.methods.rollout import rollout

    torch.manual_seed(0)
    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                           num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    recorded = []  # each block's attention as torchvision's own module returns it when asked for weights
    with torch.no_grad():
        tokens = torch.cat([tv.class_token.expand(2, -1, -1), tv._process_input(x)], dim=1)
        tokens = tokens + tv.encoder.pos_embedding
        for layer in tv.encoder.layers:
            y = layer.ln_1(tokens)
            out, weights = layer.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
            recorded.append(weights)
            tokens = tokens + out
            tokens = tokens + layer.mlp(layer.ln_2(tokens))
    expected = rollout(recorded)[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(AttentionRollout(tv)(x), expected, rtol=1e-5, atol=1e-6)

    gt = GroundTruthViT(classes=4).eval()
    maps = AttentionRollout(gt)(torch.randn(2, 3, 128, 128))
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()  # 8 px patches, found from the tokens


def test_patch_grid_follows_the_image_shape():
    from jittercam.methods.rollout import patch_grid

    assert patch_grid(196, 224, 224) == (14, 14)
    assert patch_grid(8 * 12, 128, 192) == (8, 12)
    with pytest.raises(JitterCamError, match="no grid"):
        patch_grid(7, 224, 224)


def _explicit_legrad_of_hand_written_vit(model, x, target):
    """LeGrad on a `GroundTruthViT` written out: its forward with every attention matrix formed (softmax of
    q kᵀ/√d from the packed input projection), s^l = head(norm(z^l)[:, 0]) by autograd through A^l."""
    grid = model.patch_embed(x)
    tokens = (grid + model.pos_embed).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls_token.expand(len(x), -1, -1), tokens], dim=1)
    attentions, outputs = [], []
    for block in model.blocks:
        attn, y = block.attn, block.norm1(tokens)
        heads, dim = attn.num_heads, attn.embed_dim
        q, k, v = (torch.nn.functional.linear(y, attn.in_proj_weight[i * dim:(i + 1) * dim],
                                              attn.in_proj_bias[i * dim:(i + 1) * dim])
                   .unflatten(-1, (heads, dim // heads)).transpose(1, 2) for i in range(3))
        a = (q @ k.transpose(-2, -1) / (dim // heads) ** 0.5).softmax(dim=-1)
        attentions.append(a)
        tokens = tokens + attn.out_proj((a @ v).transpose(1, 2).flatten(2))
        tokens = tokens + block.mlp(block.norm2(tokens))
        outputs.append(tokens)
    maps = []
    for a, z in zip(attentions, outputs):
        s = model.head(model.norm(z)[:, 0]).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(s, a, retain_graph=True)
        maps.append(grad.relu().mean(dim=(1, 2))[:, 1:])
    side = x.shape[-1] // model.stride
    return torch.stack(maps).mean(dim=0).reshape(-1, side, side).detach()


def test_legrad_on_a_hand_written_vit_is_the_gradient_at_its_attention_matrices():
    from jittercam.groundtruth.model import GroundTruthViT

    torch.manual_seed(0)
    model = GroundTruthViT(classes=4, dim=32, depth=3, heads=4, grid=8).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([1, 3])
    expected = _explicit_legrad_of_hand_written_vit(model, x, target)
    method = LeGrad(model)
    got = method(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert expected.abs().max() > 0 and method.passes() == 1
    torch.testing.assert_close(LeGrad(model, blocks=1)(x, target).shape, got.shape)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    assert hooks == 0 and all(p.grad is None for p in model.parameters())
    with pytest.raises(JitterCamError) as error:
        LeGrad(model, variant="torchcam")
    assert str(error.value).startswith("variant 'torchcam'")


@pytest.mark.parametrize("last", [None, 2])
def test_legrad_read_from_any_multihead_attention_equals_the_torchvision_layout(torchvision_vit, last,
                                                                                monkeypatch):
    """The generic reading (blocks found by their nn.MultiheadAttention, the score from the layers after the
    last block) gives torchvision's own layout's maps on a torchvision ViT."""
    from jittercam.methods import legrad

    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    target = [3, 7, 1]
    expected = LeGrad(torchvision_vit, blocks=last)(x, target)
    monkeypatch.setattr(legrad, "_torchvision_blocks", lambda model: [])
    generic = LeGrad(torchvision_vit, blocks=last)
    assert generic._found[0].layout == "attention" and generic.passes() == 1
    torch.testing.assert_close(generic(x, target), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


class _Block(torch.nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.attn = torch.nn.MultiheadAttention(16, 2, batch_first=batch_first)

    def forward(self, tokens):
        t = tokens if self.attn.batch_first else tokens.transpose(0, 1)
        out = self.attn(t, t, t, need_weights=False)[0]
        return tokens + (out if self.attn.batch_first else out.transpose(0, 1))


class _HandWrittenViT(torch.nn.Module):
    def __init__(self, batch_first, container=False):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 16, 8, 8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 16))
        blocks = [_Block(batch_first) for _ in range(2)]
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleDict({"attn": b.attn}) if container else b for b in blocks)
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)
        for block in self.blocks:
            tokens = block(tokens) if isinstance(block, _Block) else _Block.forward(block, tokens)
        return self.head(tokens[:, 0])


def test_legrad_on_sequence_first_attention_equals_batch_first():
    torch.manual_seed(0)
    first = _HandWrittenViT(batch_first=False).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = LeGrad(first)(x, [0, 4])
    assert maps.shape == (2, 4, 4) and maps.abs().max() > 0
    twin = copy.deepcopy(first)
    for block in twin.blocks:
        block.attn.batch_first = True
    torch.testing.assert_close(twin(x), first(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(LeGrad(twin)(x, [0, 4]), maps, rtol=1e-4, atol=1e-7)


def test_legrad_refuses_attention_outside_a_block():
    torch.manual_seed(0)
    with pytest.raises(JitterCamError, match=r"legrad needs a vision transformer .*; _HandWrittenViT has none$"):
        LeGrad(_HandWrittenViT(batch_first=True, container=True))


def test_legrad_refuses_blocks_that_do_not_run_once():
    torch.manual_seed(0)
    model = _HandWrittenViT(batch_first=True).eval()
    model.forward = lambda x: model.head(model.blocks[1](model.blocks[0](model.blocks[0](
        torch.cat([model.cls.expand(len(x), -1, -1), model.embed(x).flatten(2).transpose(1, 2)], dim=1))))[:, 0])
    with pytest.raises(JitterCamError, match="2 attention blocks ran 3 times"):
        LeGrad(model)(torch.randn(1, 3, 32, 32), 0)


def test_legrad_contract_on_a_hand_written_vit():
    from jittercam.groundtruth.model import GroundTruthViT

    torch.manual_seed(0)
    model = GroundTruthViT(classes=4, dim=32, depth=2, heads=2, grid=4).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    method = jittercam.create("legrad", model)
    maps = method(x, [0, 1, 2])
    assert maps.shape == (3, 4, 4) and maps.device == x.device
    with torch.inference_mode():
        torch.testing.assert_close(method(x.clone(), [0, 1, 2]), maps, rtol=1e-5, atol=1e-7)
    alone = torch.cat([jittercam.create("legrad", model, batch_size=1)(x[i:i + 1], t) for i, t in enumerate([0, 1, 2])])
    torch.testing.assert_close(alone, maps, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(method(x), method(x, model(x).argmax(dim=1)))
    assert torch.is_grad_enabled() and all(p.grad is None for p in model.parameters())


def _hugging_face_vit(kind):
    """transformers' ViT, DeiT with a distillation token (two heads averaged), BEiT (a relative position bias
    added to the attention scores, made non-zero here; mean pooling): small and random."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    options = {"image_size": 64, "patch_size": 16, "num_hidden_layers": 3, "hidden_size": 32, "num_attention_heads": 2,
               "intermediate_size": 64, "num_labels": 10}
    if kind == "deit":
        return transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**options)).eval()
    if kind == "beit":
        model = transformers.BeitForImageClassification(
            transformers.BeitConfig(**options, use_relative_position_bias=True)).eval()
        for module in model.modules():  # one table per layer (in the attention before transformers 5.9)
            if isinstance(getattr(module, "relative_position_bias_table", None), torch.nn.Parameter):
                torch.nn.init.normal_(module.relative_position_bias_table)
        return model
    return transformers.ViTForImageClassification(transformers.ViTConfig(**options)).eval()


def _hugging_face_logits(model, kind, tokens):
    """The model's own head on a block's output tokens."""
    if kind == "deit":
        z = model.deit.layernorm(tokens)
        return (model.cls_classifier(z[:, 0]) + model.distillation_classifier(z[:, 1])) / 2
    if kind == "beit":
        return model.classifier(model.beit.pooler(model.beit.layernorm(tokens)))
    return model.classifier(model.vit.layernorm(tokens)[:, 0])


def _eager_twin(model):
    """A copy that forms its attention matrices and returns them (`output_attentions`), in the graph (built
    anew from the configuration: transformers before 5.9 cannot switch every model's implementation)."""
    config = copy.deepcopy(model.config)
    config._attn_implementation = "eager"
    twin = type(model)(config).eval()
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("kind", ["vit", "deit", "beit"])
def test_rollout_on_hugging_face_vits_equals_their_own_attentions(kind):
    from jittercam.methods.rollout import rollout

    transformers = pytest.importorskip("transformers")
    model = _hugging_face_vit(kind)
    version = tuple(int(part) for part in transformers.__version__.split(".")[:2])
    if version >= (5, 0):  # the matrices are never formed as loaded
        assert model.config._attn_implementation == "sdpa"
    if kind == "beit" and version < (5, 9):  # its position bias table is the attention's own
        with pytest.raises(JitterCamError, match=r"adds a parameter of its own \(relative_position_bias\."):
            AttentionRollout(jittercam.load_model(model))
        return
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        attentions = _eager_twin(model)(pixel_values=x, output_attentions=True).attentions
    prefix = 2 if kind == "deit" else 1
    expected = rollout(list(attentions))[:, 0, prefix:].reshape(2, 4, 4)
    torch.testing.assert_close(AttentionRollout(jittercam.load_model(model))(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["vit", "deit", "beit"])
def test_legrad_on_hugging_face_vits_is_the_gradient_at_their_own_attentions(kind):
    """s^l: the model's own head (final norm and classifier; DeiT's two heads averaged, BEiT's mean pooling)
    on block l's output; ∂s^l/∂A^l by autograd through the attention matrices the eager implementation
    returns."""
    model = _hugging_face_vit(kind)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(10))
    target = torch.tensor([4, 9])
    twin = _eager_twin(model)
    out = twin(pixel_values=x, output_attentions=True, output_hidden_states=True)
    maps = []
    for index, attention in enumerate(out.attentions):
        score = _hugging_face_logits(twin, kind, out.hidden_states[index + 1]).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, attention, retain_graph=True)
        maps.append(grad.relu().mean(dim=(1, 2))[:, 2 if kind == "deit" else 1:])
    expected = torch.stack(maps).mean(dim=0).reshape(2, 4, 4)
    method = LeGrad(jittercam.load_model(model))
    got = method(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert expected.abs().max() > 0 and method.passes() == 1
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_legrad_on_a_head_that_reads_more_than_the_last_block():
    class SkipToHead(_HandWrittenViT):
        def forward(self, x):
            tokens = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)
            first = tokens
            for block in self.blocks:
                tokens = block(tokens)
            return self.head((tokens + first)[:, 0])  # the embedding skips every block to the head

    torch.manual_seed(0)
    model = SkipToHead(batch_first=True).eval()
    x = torch.randn(3, 3, 32, 32)
    maps = LeGrad(model)(x, [0, 1, 2])  # one forward per block: the stacked tail cannot add the skip
    alone = torch.cat([LeGrad(model)(x[i:i + 1], i) for i in range(3)])  # one image: the skip broadcasts
    torch.testing.assert_close(maps, alone, rtol=1e-5, atol=1e-7)
    assert maps.abs().max() > 0


#: The families of `tests/families.py` each attention method reads (a map on the patch grid); the others are
#: refused in one line. Rollout needs a class token; neither reads windowed or hierarchical attention.
READS = {
    "rollout": {"vit", "deit-distilled", "vit-dynamic", "vit-torchvision", "vit-huggingface"},
    "legrad": {"vit", "deit-distilled", "vit-reg-avg", "vit-dynamic", "vit-torchvision", "vit-huggingface"},
}


@pytest.mark.parametrize("name", sorted(READS))
def test_which_transformer_families_the_attention_methods_read(name):
    from families import FAMILIES

    for key, family in FAMILIES.items():
        model = jittercam.load_model(family.build())
        x = torch.randn(2, 3, family.pixels, family.pixels, generator=torch.Generator().manual_seed(11))
        if key in READS[name]:
            maps = jittercam.create(name, model)(x, 0)
            assert maps.shape == (2, family.pixels // 16, family.pixels // 16) and torch.isfinite(maps).all(), key
        else:
            with pytest.raises(JitterCamError, match=f"^{name} needs a vision transformer"):
                jittercam.create(name, model)(x, 0)



class _OlderSelfAttention(torch.nn.Module):
    """transformers' ViT self-attention before 5.9: `query`, `key`, `value`; returns its context and keeps
    its attention probabilities (`probs`, in the graph) for the test."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.query, self.key, self.value = (torch.nn.Linear(dim, dim) for _ in range(3))

    def forward(self, hidden_states, head_mask=None):
        q, k, v = (layer(hidden_states).unflatten(-1, (self.num_attention_heads, -1)).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))
        self.probs = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1)
        return (self.probs @ v).transpose(1, 2).flatten(2)


class _OlderLayer(torch.nn.Module):
    """A block of transformers' ViT before 5.9: the output projection is the attention's `output.dense`;
    returns a tuple, as BEiT's layers did."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.layernorm_before = torch.nn.LayerNorm(dim)
        self.attention = torch.nn.Module()
        self.attention.attention = _OlderSelfAttention(dim, heads)
        self.attention.output = torch.nn.Module()
        self.attention.output.dense = torch.nn.Linear(dim, dim)
        self.mlp = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, 2 * dim), torch.nn.GELU(),
                                       torch.nn.Linear(2 * dim, dim))

    def forward(self, tokens):
        tokens = tokens + self.attention.output.dense(self.attention.attention(self.layernorm_before(tokens)))
        return (tokens + self.mlp(tokens),)


class _OlderHuggingFaceViT(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 16, 8, 8)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, 16))
        self.layers = torch.nn.ModuleList(_OlderLayer() for _ in range(3))
        self.layernorm, self.classifier = torch.nn.LayerNorm(16), torch.nn.Linear(16, 5)

    def forward(self, x, keep=None):
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)
        for layer in self.layers:
            tokens = layer(tokens)[0]
            if keep is not None:
                keep.append(tokens)
        return self.classifier(self.layernorm(tokens)[:, 0])


def test_attention_in_the_layout_of_transformers_before_5_9_is_read_by_rollout_and_legrad():
    from jittercam.methods.rollout import rollout

    torch.manual_seed(0)
    model = _OlderHuggingFaceViT().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 4])
    blocks: list[torch.Tensor] = []
    model(x, keep=blocks)
    probs = [layer.attention.attention.probs for layer in model.layers]
    expected = rollout([p.detach() for p in probs])[:, 0, 1:].reshape(2, 4, 4)
    torch.testing.assert_close(AttentionRollout(model)(x), expected, rtol=1e-5, atol=1e-6)
    maps = []
    for tokens, attention in zip(blocks, probs, strict=True):
        score = model.classifier(model.layernorm(tokens)[:, 0]).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(score, attention, retain_graph=True)
        maps.append(grad.relu().mean(dim=(1, 2))[:, 1:])
    expected = torch.stack(maps).mean(dim=0).reshape(2, 4, 4)
    got = LeGrad(model)(x, target)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert expected.abs().max() > 0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_rollout_names_the_parameter_an_attention_adds_to_its_scores():
    torch.manual_seed(0)
    model = _OlderHuggingFaceViT().eval()
    for layer in model.layers:  # BEiT's own position bias table before transformers 5.9
        layer.attention.attention.relative_position_bias_table = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(JitterCamError, match=r"_OlderHuggingFaceViT has none that it can recompute: its "
                       r"_OlderSelfAttention adds a parameter of its own \(relative_position_bias_table\)"):
        AttentionRollout(model)
    assert LeGrad(model)(torch.randn(1, 3, 32, 32), 0).shape == (1, 4, 4)  # LeGrad never recomputes them
