"""The transformer and hybrid families of the README's table, built small with random weights (timm 1.0.31,
torchvision 0.29, transformers 5.25), each with the layer the probe must choose: shared by
tests/test_transformer_families.py and benchmarks/transformer_families.py."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Family:
    title: str  # the README's words
    build: Callable[[], nn.Module]
    pixels: int  # the input size the small model takes
    layer: str | None  # the layer the probe chooses; None: the probe refuses the model
    refuses: frozenset[str]  # which of Upscale-CAM and CAMERAS refuse it (they run it at other input sizes)


def _timm(name: str, **options) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        torch.manual_seed(0)
        return timm.create_model(name, pretrained=False, **options).eval()

    return build


def _torchvision(builder: str, **options) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        torch.manual_seed(0)
        model = getattr(torchvision.models, builder)(**options).eval()
        head = getattr(getattr(model, "heads", None), "head", None)
        if head is not None:  # torchvision's ViT starts with an all-zero head: every gradient would be 0
            nn.init.normal_(head.weight, std=0.02)
        return model

    return build


def _hf_vit() -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=64, patch_size=16, num_hidden_layers=2, hidden_size=32,
                                    num_attention_heads=2, intermediate_size=64, num_labels=10)
    return transformers.ViTForImageClassification(config).eval()


_BOTH = frozenset({"upscale", "cameras"})
_NONE: frozenset[str] = frozenset()
SMALL_VIT = {"img_size": 64, "depth": 2, "embed_dim": 32, "num_heads": 2, "num_classes": 10}

FAMILIES = {
    "vit": Family("timm ViT / DeiT (class token)", _timm("vit_tiny_patch16_224", **SMALL_VIT), 64,
                  "blocks.1.norm1", _BOTH),
    "deit-distilled": Family("timm DeiT distilled (class + distillation token)",
                             _timm("deit_tiny_distilled_patch16_224", **SMALL_VIT), 64, "blocks.1.norm1", _BOTH),
    "vit-reg-avg": Family("timm ViT, 4 register tokens, average pooling",
                          _timm("vit_tiny_patch16_224", **SMALL_VIT, reg_tokens=4, class_token=False,
                                global_pool="avg"), 64, "norm", _BOTH),
    "vit-dynamic": Family("timm ViT built with dynamic_img_size=True",
                          _timm("vit_tiny_patch16_224", **SMALL_VIT, dynamic_img_size=True), 64,
                          "blocks.1.norm1", _NONE),
    "swin": Family("timm Swin", _timm("swin_tiny_patch4_window7_224", embed_dim=24, depths=(1, 1, 1, 1),
                                      num_heads=(1, 1, 1, 1), num_classes=10), 224, "norm", _BOTH),
    "swinv2": Family("timm Swin V2", _timm("swinv2_tiny_window8_256", embed_dim=24, depths=(1, 1, 1, 1),
                                            num_heads=(1, 1, 1, 1), num_classes=10), 256, "norm", _BOTH),
    "efficientformer": Family("timm EfficientFormer", _timm("efficientformer_l1", num_classes=10), 224,
                              "norm", _BOTH),
    "levit": Family("timm LeViT", _timm("levit_128s", num_classes=10), 224, None, _BOTH),
    "maxvit-timm": Family("timm MaxViT / CoAtNet", _timm("maxvit_rmlp_pico_rw_256", num_classes=10), 256,
                          "norm", frozenset({"cameras"})),  # 2x works; 1.5x (384 px) breaks its 8x8 windows
    "vit-torchvision": Family("torchvision ViT", _torchvision(
        "VisionTransformer", image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10), 64, "encoder.layers.encoder_layer_1.ln_1", _BOTH),
    "swin-torchvision": Family("torchvision Swin / Swin V2", _torchvision(
        "SwinTransformer", patch_size=[4, 4], embed_dim=24, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
        window_size=[7, 7], num_classes=10), 224, "permute", _NONE),
    "maxvit-torchvision": Family("torchvision MaxViT", _torchvision(
        "MaxVit", input_size=(224, 224), stem_channels=16, partition_size=7, block_channels=[16, 32, 64, 64],
        block_layers=[1, 1, 1, 1], head_dim=8, stochastic_depth_prob=0.0, num_classes=10), 224,
        "blocks.3", _BOTH),
    "vit-huggingface": Family("Hugging Face ViT (ViTForImageClassification)", _hf_vit, 64,
                              "model.vit.layers.1.layernorm_before", _BOTH),
}
