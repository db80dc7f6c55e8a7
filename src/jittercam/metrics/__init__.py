"""The Jitter-CAM paper's evaluation metrics (§4.2–4.5) as pure, batched torch functions.

Each metric takes the model (where one is needed), a batch of images, raw `(B, h, w)` maps of any
size and optional targets, and returns one value per image on the input's device, so that rows can
be stored and aggregated; the small aggregate helpers give the set-level figures of the paper's tables.

One image convention for all of them: `images` are the model's input tensors `(B, 3, S, S)`, normalised
with the model's own card (`jittercam.data.to_input`; `jittercam.model_card(model)` has `.mean`, `.std`,
`.input_size`). The only metric that needs [0, 1] pixels, `faithfulness` (and `expansion_faithfulness`),
de-normalises with `mean`/`std`, which default to the card attached to the model and must be passed
when it has none (`JitterCamError`, never a silent ImageNet default). Deletion's substrate (zeros of the
input tensor, i.e. the mean colour) and insertion's blur act on the input tensor, as RISE. Min–max
scaling of maps is called `minmax` (`jittercam.maps.minmax`, `energy_in_mask(..., minmax=True)`);
"normalise" means mean/std only.

- `deletion`, `insertion`, `deletion_insertion` (RISE; Table 2): AUC per image, curves on request.
- `faithfulness`, `expansion_faithfulness` -> Y, O; `average_drop`, `increase_in_confidence`,
  `improvement` (Table 1, Fig. 5); `expand_explanation`, `constant_baseline`.
- `weak_localisation` -> hits per threshold; `localisation_error` (Table 3).
- `pointing_game` -> hits; `pointing_accuracy` (Table 4); `energy_in_mask` / `energy_in_boxes`.
- `rank_correlation` (§4.2).
- Ground truth (issue 14): `evidence_auc` (ROC AUC of the map against an evidence mask), `two_peaks` /
  `resolves` (a Rayleigh-style two-peak criterion per map) and `resolving_power` over a separation sweep.
- `relevance_mass`, `relevance_rank` (Arras et al. 2022, CLEVR-XAI; = Quantus's on maps at the mask's
  size): the share of the map's relevance in the mask, and of its |mask| most relevant pixels.
- `road` (Rong et al. 2022; issue 24): MoRF/LeRF probability and accuracy per percentage of pixels removed
  and filled by `noisy_linear_imputation`, and the combined score.
- The model-randomisation sanity check (issue 24): `mprt` (Adebayo et al. 2018), `smooth_mprt` and
  `efficient_mprt` (Hedström et al. 2024), = Quantus's `MPRT`, `SmoothMPRT`, `EfficientMPRT`.
"""
from .correlation import rank_correlation
from .faithfulness import (
    EXPANSION_ALPHAS,
    Faithfulness,
    Improvement,
    average_drop,
    constant_baseline,
    expand_explanation,
    expansion_faithfulness,
    faithfulness,
    improvement,
    increase_in_confidence,
)
from .groundtruth import Profile, TwoPeaks, evidence_auc, profile, resolves, resolving_power, two_peaks
from .localisation import (
    SCHEMES,
    THRESHOLDS,
    Localisation,
    LocalisationError,
    Pointing,
    PointingAccuracy,
    boxes_to_mask,
    energy_in_boxes,
    energy_in_mask,
    localisation_error,
    pointing_accuracy,
    pointing_game,
    weak_localisation,
)
from .perturbation import (
    DeletionInsertion,
    PerturbationCurves,
    auc,
    blur_kernel,
    deletion,
    deletion_insertion,
    gaussian_blur,
    insertion,
)
from .randomisation import (
    EfficientMPRT,
    Randomisation,
    RandomisedModels,
    average_ranks,
    discrete_entropy,
    efficient_mprt,
    mprt,
    randomisable_layers,
    randomised_models,
    rebind,
    smooth_mprt,
    spearman,
    ssim,
)
from .relevance import RELEVANCE, TIES, relevance_mass, relevance_rank
from .road import NEIGHBOURS, PERCENTAGES, ROADResult, noisy_linear_imputation, road

__all__ = [
    "auc", "blur_kernel", "gaussian_blur", "deletion", "insertion", "deletion_insertion",
    "PerturbationCurves", "DeletionInsertion",
    "faithfulness", "expansion_faithfulness", "expand_explanation", "constant_baseline",
    "average_drop", "increase_in_confidence", "improvement", "EXPANSION_ALPHAS", "Faithfulness", "Improvement",
    "weak_localisation", "localisation_error", "THRESHOLDS", "SCHEMES", "Localisation", "LocalisationError",
    "pointing_game", "pointing_accuracy", "Pointing", "PointingAccuracy",
    "boxes_to_mask", "energy_in_mask", "energy_in_boxes",
    "rank_correlation",
    "mprt", "smooth_mprt", "efficient_mprt", "Randomisation", "EfficientMPRT", "RandomisedModels",
    "randomised_models", "randomisable_layers", "rebind", "spearman", "ssim", "discrete_entropy", "average_ranks",
    "evidence_auc", "profile", "two_peaks", "resolves", "resolving_power", "Profile", "TwoPeaks",
    "relevance_mass", "relevance_rank", "RELEVANCE", "TIES",
    "road", "noisy_linear_imputation", "ROADResult", "PERCENTAGES", "NEIGHBOURS",
]
