"""A small ResNet-like CNN for the ground-truth dataset: total stride 8, so its last feature map is
16 x 16 at 128 px (8 x 8 at 64 px), then global average pooling and a linear head (the CAM family applies).

    stem:   conv3x3 stride 2 (3 -> w) + BN + ReLU
    layer1: BasicBlock(w -> 2w, stride 2)
    layer2: BasicBlock(2w -> 4w, stride 2)
    layer3: BasicBlock(4w -> 4w, stride 1)     <- the probe's target layer (the last 4-D feature map)
    head:   AdaptiveAvgPool2d(1) -> Linear(4w -> classes)

A BasicBlock is conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the input (through a 1x1 stride conv + BN when
the shape changes), then ReLU; each ReLU is its own module so every module runs once per forward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard, attach_card, update_card
from .dataset import MEAN, NAME, PATTERNS, STD, heldout_config


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class GroundTruthNet(nn.Module):
    """See the module docstring; `width` w is the stem's channels."""

    stride = 8
    fusion_layers = ("layer1", "layer2", "layer3")  # the stage outputs LayerCAM fuses (strides 4, 8, 8)

    def __init__(self, classes: int = 4, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, 2 * width, 2)
        self.layer2 = BasicBlock(2 * width, 4 * width, 2)
        self.layer3 = BasicBlock(4 * width, 4 * width, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(features).flatten(1))


class Block(nn.Module):
    """A pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)); each part its own module."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class GroundTruthViT(nn.Module):
    """A small class-token vision transformer with the CNN's geometry: 8 × 8 patches (a 16 × 16 token grid
    at 128 px, the CNN's map), `depth` pre-norm blocks of width `dim`, the class token's final norm read by a
    linear head. Every token attends to every other from the first block on: a global receptive field,
    where the CNN's is local. The position embeddings are learned at 16 × 16 and resized bicubically to the
    grid of another input size (the curriculum's smaller canvas, Upscale-CAM, CAMERAS)."""

    stride = 8
    fusion_layers: tuple[str, ...] = ()

    def __init__(self, classes: int = 4, dim: int = 64, depth: int = 4, heads: int = 4, grid: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, self.stride, self.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, dim, grid, grid) * 0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.patch_embed(x)
        position: torch.Tensor = self.pos_embed
        if position.shape[-2:] != grid.shape[-2:]:
            position = F.interpolate(position, size=grid.shape[-2:], mode="bicubic", align_corners=False)
        tokens = (grid + position).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


ARCHITECTURES = ("cnn", "vit")


def build(classes: int = 4, width: int = 8, size: int = 128, arch: str = "cnn") -> nn.Module:
    """A fresh network (eval mode) carrying a ModelCard: `size` px input, the dataset's MEAN / STD, its
    `fusion_layers`, and as `heldout` (the held-out dataset's configuration, what `jittercam bench
    groundtruth` evaluates on) the default one of seed 0 until `train` or `load` records the real one.
    `arch` "cnn" is `GroundTruthNet` of stem width `width`; "vit" is `GroundTruthViT` of width 8 · `width`."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, not {arch!r}")
    fusion: tuple[str, ...]
    if arch == "vit":
        model: nn.Module = GroundTruthViT(classes, dim=8 * width, grid=size // GroundTruthViT.stride).eval()
        name, fusion = f"{NAME}-vit-w{width}", ()
    else:
        model, name = GroundTruthNet(classes, width).eval(), f"{NAME}-w{width}"
        fusion = GroundTruthNet.fusion_layers
    card = ModelCard(name=name, input_size=size, mean=MEAN, std=STD, categories=PATTERNS[:classes],
                     fusion_layers=fusion)
    attach_card(model, card)
    return carry(model, heldout=heldout_config(0, size, classes))


def carry(model: nn.Module, *, heldout: dict, weights_file: str | None = None) -> nn.Module:
    """Record on `model`'s card the held-out configuration it is evaluated on and, when it was read from
    a file, that file.

    Returns:
        `model`, for chaining.
    """
    changes: dict = {"heldout": dict(heldout)}
    if weights_file is not None:
        changes["weights_file"] = str(weights_file)
    update_card(model, **changes)
    return model
