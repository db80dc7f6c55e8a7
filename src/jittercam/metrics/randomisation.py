"""The model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018) and
its 2024 repairs, smooth and efficient MPRT (Hedström et al., "Sanity Checks Revisited: An Exploration to
Repair the Model Parameter Randomisation Test", 2024).

A map that explains the model must change when the model's weights are destroyed. The test re-initialises the
parameters of one layer after another on a deep copy of the model (cascading from the output to the input,
`order="top_down"`; `"bottom_up"` from the input; `"independent"` one layer at a time), explains the same
images for the same classes with the method re-created on each randomised copy, and compares each map with the
original one (Spearman's rho of the absolute, max-normalised maps, and SSIM). The user's model is never touched.

Reference code checked: Quantus 0.6 (`quantus.metrics.randomisation.mprt.MPRT`, `smooth_mprt.SmoothMPRT`,
`efficient_mprt.EfficientMPRT`, `quantus.helpers.model.pytorch_model.PyTorchModel.get_random_layer_generator`,
`quantus.functions.similarity_func.correlation_spearman` / `ssim`, `quantus.functions.complexity_func.
discrete_entropy`, `quantus.functions.normalise_func`). Equal to them on the same model, method and seed (tests),
with these conventions:

- Layers are re-initialised as Quantus does: every module with `reset_parameters` (a BatchNorm's running
  statistics reset with it), `torch.manual_seed(seed + 1)` before each reset — inside `torch.random.fork_rng`,
  so that the caller's random state is left as it was. `layers="blocks"` randomises the model's blocks (each
  module below the containers `nn.Sequential`/`nn.ModuleList`/`nn.ModuleDict` that holds resettable
  modules; all of them at once) instead of every module.
- Maps are compared at `size` (default: the input's size, as Quantus compares attributions at the input's
  resolution; bilinear), each normalised by its own maximum absolute value (Quantus divides a whole batch by
  its maximum: the same at batch size 1) before the absolute value is taken.
- SSIM is the paper's: of the maps as images (skimage's `structural_similarity`, 7 × 7 uniform window, sample
  covariance, data range of the pair). Quantus passes the flattened maps (`flat_ssim=True`: a 7-pixel window
  along the rows).
- Smooth MPRT: Quantus draws fresh noise (numpy's global state) for every model; here the same seeded noise
  (`noise_seed`) serves the original and every randomised model, so that their maps differ by the weights only.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import JitterCamError
from ..maps import resize
from ._common import check_images, check_maps, scores

ORDERS = ("top_down", "bottom_up", "independent")
MEASURES = ("spearman", "ssim")
GRANULARITIES = ("modules", "blocks")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)

Explainer = Callable[[nn.Module], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Randomisation:
    """The similarity of each randomised explanation to the original, per layer.

    Attributes:
        layers: the layers randomised, in the order of randomisation; `"original"` first (the unrandomised
            model, similarity 1 for a deterministic method).
        similarity: measure name -> `(B, len(layers))` similarities, one row per image.
    """

    layers: tuple[str, ...]
    similarity: dict[str, torch.Tensor]

    def last(self, measure: str = "spearman") -> torch.Tensor:
        """The similarity after the last randomisation (the whole model, cascading).

        Args:
            measure: a measure in `similarity`.

        Returns:
            `(B,)` similarities.
        """
        return self.similarity[measure][:, -1]


@dataclass(frozen=True)
class EfficientMPRT:
    """Efficient MPRT: the relative rise of the maps' discrete entropy after full randomisation.

    Attributes:
        original: `(B,)` entropy of the original maps.
        randomised: `(B,)` entropy of the maps of the fully randomised model.
        score: `(B,)` (randomised - original) / original; higher: the map depends more on the weights.
    """

    original: torch.Tensor
    randomised: torch.Tensor
    score: torch.Tensor


# --------------------------------------------------------------------------------------------- layers
def randomisable_layers(model: nn.Module, layers: str | Sequence[str] = "modules") -> list[str]:
    """The names of the layers the test randomises, in the model's order (input to output).

    Args:
        model: the classifier.
        layers: "modules" (Quantus: every module with `reset_parameters`), "blocks" (the modules just below the
            containers that hold resettable modules), or the names themselves (each checked).

    Returns:
        The names, as `model.named_modules()` gives them.

    Raises:
        JitterCamError: an unknown granularity, a name the model does not have, or no layer to randomise.
    """
    named = dict(model.named_modules())
    if isinstance(layers, str):
        if layers == "modules":
            names = [name for name, module in named.items() if hasattr(module, "reset_parameters")]
        elif layers == "blocks":
            names = _blocks(model, "")
        else:
            raise JitterCamError(f"layers {layers!r}: choose from {', '.join(GRANULARITIES)} or a list of module "
                                 "names", option="layers")
    else:
        names = list(layers)
        missing = [name for name in names if name not in named]
        if missing:
            raise JitterCamError(f"the model has no module {missing[0]!r}", option="layers")
    names = [name for name in names if _resettable(named[name])]
    if not names:
        raise JitterCamError("the model has no layer with reset_parameters to randomise", option="layers")
    return names


def _resettable(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if hasattr(m, "reset_parameters")]


def _blocks(module: nn.Module, prefix: str) -> list[str]:
    names = []
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, _CONTAINERS):
            names += _blocks(child, full + ".")
        elif _resettable(child):
            names.append(full)
    return names


def _reset(module: nn.Module, seed: int) -> None:
    """Quantus's re-initialisation of one layer: the seed, then `reset_parameters`, for each resettable module
    in it; the global random state restored afterwards."""
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        for part in _resettable(module):
            torch.manual_seed(seed + 1)
            part.reset_parameters()  # type: ignore[operator]


def randomised_models(model: nn.Module, order: str = "top_down", seed: int = 42,
                      layers: str | Sequence[str] = "modules", steps: int | None = None
                      ) -> RandomisedModels:
    """One deep copy of `model`, yielded after each layer's randomisation (Quantus's random layer generator).

    Cascading orders randomise one more layer at each step; `"independent"` restores the copy's original
    parameters before each layer. The same copy is yielded at every step: use it before the next.

    Args:
        model: the classifier; never modified.
        order: "top_down" (cascading from the output), "bottom_up" (cascading from the input) or "independent".
        seed: re-initialisation seed (Quantus's `seed`; `seed + 1` is set before each reset).
        layers: the layers' granularity or names (`randomisable_layers`).
        steps: randomise only the first `steps` layers of the order; None: all.

    Returns:
        An iterable of `(layer name, randomised copy)`; its `names` are the layers, in order. Each iteration
        starts from a fresh copy.

    Raises:
        JitterCamError: an unknown order, granularity or layer, or `steps` below 1.
    """
    if order not in ORDERS:
        raise JitterCamError(f"order {order!r}: choose from {', '.join(ORDERS)}", option="order")
    if steps is not None and steps < 1:
        raise JitterCamError(f"steps must be at least 1, got {steps}", option="steps")
    names = randomisable_layers(model, layers)
    if order == "top_down":
        names = names[::-1]
    names = names[:steps] if steps is not None else names
    return RandomisedModels(model, order, seed, names)


class RandomisedModels:
    """What `randomised_models` returns: iterate it for `(layer name, randomised copy)`.

    Attributes:
        model: the classifier (copied, never modified).
        order: the order.
        seed: the re-initialisation seed.
        names: the layers it randomises, in order.

    Args:
        model (nn.Module): the classifier.
        order (str): "top_down", "bottom_up" or "independent".
        seed (int): the re-initialisation seed.
        names (list[str]): the layers, in the order of randomisation.
    """

    def __init__(self, model: nn.Module, order: str, seed: int, names: list[str]) -> None:
        self.model, self.order, self.seed, self.names = model, order, seed, names

    def __iter__(self) -> Iterator[tuple[str, nn.Module]]:
        randomised = copy.deepcopy(self.model)
        original = ({k: v.clone() for k, v in randomised.state_dict().items()} if self.order == "independent"
                    else None)
        modules = dict(randomised.named_modules())
        for name in self.names:
            if original is not None:
                randomised.load_state_dict(original)
            _reset(modules[name], self.seed)
            yield name, randomised


def rebind(method: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], model: nn.Module) -> Explainer:
    """An explainer factory from a method already built on `model`: `rebind(method, model)(other)` is a deep
    copy of `method` whose references to `model`'s modules, parameters and buffers point to `other`'s of the
    same name (a copy of `model`, e.g. a randomised one): the method with the same options on `other`.

    Args:
        method: a method built on `model` (any object holding references to it).
        model: the model it was built on.

    Returns:
        `factory(other)` -> the method on `other`.
    """
    def factory(other: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        memo: dict[int, object] = {}
        for kind in ("named_modules", "named_parameters", "named_buffers"):
            theirs = dict(getattr(other, kind)())
            memo.update({id(mine): theirs[name] for name, mine in getattr(model, kind)() if name in theirs})
        return copy.deepcopy(method, memo)
    return factory


# --------------------------------------------------------------------------------------------- measures
def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) along the last dimension, ties given their average rank (scipy's `rankdata`).

    Args:
        values: `(B, N)` values.

    Returns:
        `(B, N)` float64 ranks.
    """
    values = values.double()
    ordered = values.sort(dim=-1).values.contiguous()
    below = torch.searchsorted(ordered, values.contiguous(), right=False)
    upto = torch.searchsorted(ordered, values.contiguous(), right=True)
    return (below + upto + 1).double() / 2


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rho between paired maps over their pixels (average ranks for ties; NaN for a constant map),
    equal to `scipy.stats.spearmanr` row by row and to Quantus's `correlation_spearman(batched=True)`.

    Args:
        a: `(B, ...)` maps.
        b: `(B, ...)` maps of the same shape.

    Returns:
        `(B,)` float64 rho.
    """
    ra, rb = average_ranks(a.flatten(1)), average_ranks(b.flatten(1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / ((ra**2).sum(1) * (rb**2).sum(1)).sqrt()


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, flat: bool = False) -> torch.Tensor:
    """Structural similarity of paired maps, as `skimage.metrics.structural_similarity` with its defaults
    (uniform `window`, sample covariance, K1 = 0.01, K2 = 0.03, the mean over the windows inside the map) and
    the data range of each pair (max - min of both), as Quantus's `ssim`.

    Args:
        a: `(B, H, W)` maps.
        b: `(B, H, W)` maps.
        window: the window's side (odd).
        flat: compare the maps flattened to rows, with a 1-D window (what Quantus's MPRT passes to `ssim`).

    Returns:
        `(B,)` float64 SSIM; NaN where both maps are one constant.

    Raises:
        JitterCamError: `window` is even or larger than the maps.
    """
    if window % 2 == 0 or window < 1:
        raise JitterCamError(f"window must be odd and positive, got {window}", option="window")
    a, b = a.double(), b.double()
    stacked = torch.stack([a, b, a * a, b * b, a * b], 1)
    if flat:
        if a[0].numel() < window:
            raise JitterCamError(f"maps of {a[0].numel()} pixels are smaller than the window {window}")
        means = torch.nn.functional.avg_pool1d(stacked.flatten(2), window, stride=1)
        count = window
    else:
        if min(a.shape[-2:]) < window:
            raise JitterCamError(f"maps of {tuple(a.shape[-2:])} pixels are smaller than the window {window}")
        means = torch.nn.functional.avg_pool2d(stacked, window, stride=1)
        count = window * window
    ux, uy, uxx, uyy, uxy = means.unbind(1)
    norm = count / (count - 1)
    vx, vy, vxy = norm * (uxx - ux * ux), norm * (uyy - uy * uy), norm * (uxy - ux * uy)
    both = torch.cat([a.flatten(1), b.flatten(1)], 1)
    span = (both.amax(1) - both.amin(1)).view(-1, *([1] * (ux.dim() - 1)))
    c1, c2 = (0.01 * span) ** 2, (0.03 * span) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def discrete_entropy(maps: torch.Tensor, bins: int = 100) -> torch.Tensor:
    """Shannon entropy (nats) of each map's histogram of `bins` equal bins between its minimum and maximum
    (`numpy.histogram` then `scipy.stats.entropy`: Quantus's `discrete_entropy`, eMPRT's complexity).

    Args:
        maps: `(B, ...)` maps.
        bins: the number of bins.

    Returns:
        `(B,)` float64 entropy; 0 for a constant map.
    """
    values = maps.flatten(1)
    values = values if values.is_floating_point() else values.double()
    # in the maps' dtype, as numpy's histogram bins a float32 array with float32 edges
    low, high = values.amin(1, keepdim=True), values.amax(1, keepdim=True)
    same = high == low
    low, high = torch.where(same, low - 0.5, low), torch.where(same, high + 0.5, high)  # numpy's range
    steps = torch.linspace(0, 1, bins + 1, dtype=torch.float64, device=values.device)
    edges = (low.double() + (high - low).double() * steps).to(values.dtype)  # numpy's edges, (B, bins + 1)
    edges[:, -1:] = high
    index = ((values - low) * (bins / (high - low))).floor().long().clamp(0, bins - 1)
    # numpy's correction of the index near an edge (within rounding)
    index = index - (values < edges.gather(1, index)).long()
    index = index + ((values >= edges.gather(1, index + 1)) & (index != bins - 1)).long()
    counts = torch.zeros(values.shape[0], bins, dtype=torch.float64, device=values.device)
    counts.scatter_add_(1, index, torch.ones_like(values, dtype=torch.float64))
    p = counts / counts.sum(1, keepdim=True)
    return -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(1)


# --------------------------------------------------------------------------------------------- the tests
def _prepare(maps: torch.Tensor, size: Sequence[int], normalise: str | None, absolute: bool) -> torch.Tensor:
    maps = resize(check_maps(maps), tuple(size))  # in the maps' dtype, as Quantus (ranks of float32 values)
    if normalise == "max":
        peak = maps.abs().flatten(1).amax(1).view(-1, 1, 1)
        maps = torch.where(peak > 0, maps / torch.where(peak > 0, peak, 1.0), maps)
    elif normalise == "second_moment":
        moment = maps.pow(2).flatten(1).mean(1).sqrt().view(-1, 1, 1)
        maps = torch.where(moment > 0, maps / torch.where(moment > 0, moment, 1.0), maps)
    return maps.abs() if absolute else maps


def _similarities(a: torch.Tensor, b: torch.Tensor, measures: Sequence[str],
                  flat_ssim: bool) -> dict[str, torch.Tensor]:
    result = {}
    for measure in measures:
        if measure == "spearman":
            result[measure] = spearman(a, b)
        elif measure == "ssim":
            result[measure] = ssim(a, b, flat=flat_ssim)
    return result


def _targets(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | Sequence[int] | None
             ) -> torch.Tensor:
    """The classes explained: fixed once on the original model (its top-1 when `target` is None)."""
    if target is None:
        with torch.no_grad():
            return scores(model, images, softmax=False).argmax(1)
    return torch.as_tensor(target, dtype=torch.long, device=images.device).expand(images.shape[0]).clone()


def _check(images: torch.Tensor, measures: Sequence[str]) -> None:
    check_images(images)
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise JitterCamError(f"measures {list(measures)!r}: choose from {', '.join(MEASURES)}", option="measures")


def mprt(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | Sequence[int] | None,
         explainer: Explainer, *, order: str = "top_down", seed: int = 42, layers: str | Sequence[str] = "modules",
         steps: int | None = None, measures: Sequence[str] = MEASURES, absolute: bool = True,
         normalise: bool = True, size: int | Sequence[int] | None = None, flat_ssim: bool = False,
         skip_layers: bool = False, original: torch.Tensor | None = None) -> Randomisation:
    """The model parameter randomisation test (Adebayo et al. 2018; Quantus's `MPRT`).

    Args:
        model: the classifier; never modified (the test works on a deep copy).
        images: `(B, 3, H, W)` model inputs.
        target: the classes explained (an int or one per image); None: the original model's top-1, kept for
            every randomised model.
        explainer: `explainer(model)` -> a method called as `method(images, target)` returning `(B, h, w)` maps,
            e.g. `functools.partial(jittercam.create, "gradcam")`, or `rebind(method, model)` for a method
            already built; it is re-created on each randomised copy.
        order: "top_down" (default, the paper's cascade from the output), "bottom_up" or "independent".
        seed: re-initialisation seed (Quantus's default 42).
        layers: "modules" (Quantus), "blocks", or module names (`randomisable_layers`).
        steps: randomise only the first `steps` layers of the order; None: all.
        measures: among "spearman" and "ssim".
        absolute: compare absolute values (the paper's "Spearman of absolute values"; Quantus's `abs=True`).
        normalise: divide each map by its maximum absolute value first (Quantus's `normalise_by_max`).
        size: `(H, W)` (or an int) the maps are compared at; None: the images' size.
        flat_ssim: Quantus's SSIM of the flattened maps instead of the paper's 2-D SSIM.
        skip_layers: compare only the last step's maps (Quantus's `skip_layers`); the other steps are NaN.
        original: the raw `(B, h, w)` maps of `model` for `target`, when already computed (they must be the
            method's for these classes); None: computed here.

    Returns:
        The similarity per layer (`Randomisation`), `"original"` first.

    Raises:
        JitterCamError: invalid images, measures, order, layers or steps (see `randomised_models`).
    """
    return _run(model, images, target, explainer, order=order, seed=seed, layers=layers, steps=steps,
                measures=measures, absolute=absolute, normalise="max" if normalise else None, size=size,
                flat_ssim=flat_ssim, skip_layers=skip_layers, smooth=None, original=original)


def smooth_mprt(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | Sequence[int] | None,
                explainer: Explainer, *, samples: int = 50, noise: float = 0.1, noise_seed: int = 0,
                order: str = "bottom_up", seed: int = 42, layers: str | Sequence[str] = "modules",
                steps: int | None = None, measures: Sequence[str] = ("spearman",), absolute: bool = True,
                normalise: bool = True, size: int | Sequence[int] | None = None, flat_ssim: bool = False,
                skip_layers: bool = False) -> Randomisation:
    """Smooth MPRT (Hedström et al. 2024; Quantus's `SmoothMPRT`): MPRT on maps averaged over `samples`
    inputs, `samples - 1` with Gaussian noise of std `noise` × (max - min of the image) and the image itself.

    Args:
        model: the classifier; never modified.
        images: `(B, 3, H, W)` model inputs.
        target: the classes explained; None: the original model's top-1.
        explainer: `explainer(model)` -> a method (see `mprt`).
        samples: inputs per averaged map (Quantus's `nr_samples`, default 50).
        noise: the noise's std relative to each image's range (Quantus's `noise_magnitude`, 0.1).
        noise_seed: seed of the noise, drawn once and used for every model.
        order: "bottom_up" (Quantus's default for sMPRT), "top_down" or "independent".
        seed: re-initialisation seed.
        layers: "modules", "blocks", or module names.
        steps: randomise only the first `steps` layers; None: all.
        measures: among "spearman" and "ssim".
        absolute: compare absolute values.
        normalise: divide each averaged map by the root of its mean square first (Quantus's
            `normalise_by_average_second_moment_estimate`).
        size: the comparison size; None: the images'.
        flat_ssim: Quantus's SSIM of the flattened maps.
        skip_layers: compare only the last step's maps.

    Returns:
        The similarity per layer (`Randomisation`).

    Raises:
        JitterCamError: `samples` below 1, or what `mprt` refuses.
    """
    if samples < 1:
        raise JitterCamError(f"samples must be at least 1, got {samples}", option="samples")
    check_images(images)
    generator = torch.Generator(device="cpu").manual_seed(noise_seed)
    span = (images.flatten(1).amax(1) - images.flatten(1).amin(1)).view(-1, 1, 1, 1)
    draws = [torch.randn(images.shape, generator=generator, dtype=torch.float64).to(images.device)
             for _ in range(samples - 1)]
    noisy = [images + (draw * noise * span).to(images.dtype) for draw in draws] + [images]
    return _run(model, images, target, explainer, order=order, seed=seed, layers=layers, steps=steps,
                measures=measures, absolute=absolute, normalise="second_moment" if normalise else None,
                size=size, flat_ssim=flat_ssim, skip_layers=skip_layers, smooth=noisy, original=None)


def _run(model, images, target, explainer, *, order, seed, layers, steps, measures, absolute, normalise, size,
         flat_ssim, skip_layers, smooth, original) -> Randomisation:
    _check(images, measures)
    size = tuple(images.shape[-2:]) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    classes = _targets(model, images, target)
    generator = randomised_models(model, order, seed, layers, steps)  # checks before any explanation

    def explain(network: nn.Module, maps: torch.Tensor | None = None) -> torch.Tensor:
        if maps is not None:
            return _prepare(check_maps(maps, images.shape[0], name="original"), size, normalise, absolute)
        method = explainer(network)
        # sMPRT: Quantus's running mean over the noisy inputs
        maps = method(images, classes) if smooth is None else sum(method(x, classes) / len(smooth) for x in smooth)
        return _prepare(maps, size, normalise, absolute)

    original = explain(model, original)
    names, rows = ["original"], [_similarities(original, original, measures, flat_ssim)]
    steps_total = len(generator.names)
    for step, (name, randomised) in enumerate(generator, start=1):
        names.append(name)
        if skip_layers and step < steps_total:
            rows.append({m: torch.full_like(rows[0][m], float("nan")) for m in measures})
            continue
        rows.append(_similarities(original, explain(randomised), measures, flat_ssim))
    return Randomisation(tuple(names), {m: torch.stack([row[m] for row in rows], 1) for m in measures})


def efficient_mprt(model: nn.Module, images: torch.Tensor, target: torch.Tensor | int | Sequence[int] | None,
                   explainer: Explainer, *, order: str = "bottom_up", seed: int = 42,
                   layers: str | Sequence[str] = "modules", bins: int = 100, absolute: bool = False,
                   normalise: bool = False, size: int | Sequence[int] | None = None,
                   original: torch.Tensor | None = None) -> EfficientMPRT:
    """Efficient MPRT (Hedström et al. 2024; Quantus's `EfficientMPRT`): the relative rise in the maps'
    complexity, (H(randomised) - H(original)) / H(original), H the discrete entropy of `bins` equal bins, after
    every layer is randomised (Quantus's defaults: cascading bottom-up, neither absolute nor normalised; the maps at
    the input's size, as Quantus's attributions, so that methods of different resolutions compare).

    Args:
        model: the classifier; never modified.
        images: `(B, 3, H, W)` model inputs.
        target: the classes explained; None: the original model's top-1.
        explainer: `explainer(model)` -> a method (see `mprt`).
        order: the order the layers are randomised in (all of them in the end).
        seed: re-initialisation seed.
        layers: "modules", "blocks", or module names (all randomised in the end).
        bins: histogram bins (the paper's and Quantus's 100).
        absolute: take absolute values first (Quantus's `abs=False` default).
        normalise: divide by the root of the mean square first (Quantus's `normalise=False` default).
        size: `(H, W)` (or an int) the maps are resized to (bilinear) before the histogram; None: the images'.
        original: the raw `(B, h, w)` maps of `model` for `target`, when already computed; None: computed here.

    Returns:
        Both entropies and the score (`EfficientMPRT`).

    Raises:
        JitterCamError: invalid images, order or layers.
    """
    check_images(images)
    size = tuple(images.shape[-2:]) if size is None else ((size, size) if isinstance(size, int) else tuple(size))
    classes = _targets(model, images, target)
    generator = randomised_models(model, order, seed, layers)
    randomised = model
    for _, step in generator:  # every layer, in order: the fully randomised copy at the end
        randomised = step

    def entropy(network: nn.Module, maps: torch.Tensor | None = None) -> torch.Tensor:
        maps = check_maps(explainer(network)(images, classes) if maps is None else maps, images.shape[0])
        prepared = _prepare(maps, size, "second_moment" if normalise else None, absolute).double()
        return discrete_entropy(prepared, bins)  # in float64 (numpy bins float32 with float32 edges)

    before, after = entropy(model, original), entropy(randomised)
    return EfficientMPRT(before, after, (after - before) / before)
