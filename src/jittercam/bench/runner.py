"""Running one experiment over a dataset into a results store: batches, resume, skips, progress.

The run, in order: everything that can be checked is checked before the store is opened (experiment,
methods and their options, dataset, model, layers), so a mistake writes nothing. Then the items
(`--limit` first ones of the dataset, this rank's share of them under torchrun) are taken in fixed
chunks of `batch_size` images; each chunk is loaded once, the top-1 class found with one forward pass
where the experiment explains the prediction, and every method that still has work in the chunk
explains it once; its maps go to every metric of the experiment, and the rows, curves, gallery entries
and done markers of that (method, chunk) are committed in one transaction (Ctrl-C waits for it). A
method whose one explanation costs at least a chunk's worth of forward passes (RISE, Score-CAM,
Jitter-CAM on a CPU) fills its batches alone: it explains and commits the chunk one item at a time, so
that Ctrl-C loses at most the item in progress.

Progress: before the first chunk the run says what it will cost (each method's forward passes per
explanation x its items x one forward pass timed on the device, plus its metrics' seconds timed on one
item), with ways to shorten it when that is long; the bar counts (method, item) pairs, its time left from
each method's measured seconds per item once it has some.

Compiling: unless the settings say (`compile` True or False), a run on a CPU whose compilable forward passes
are estimated long enough (`jittercam.compiled.pays`) builds its methods again compiled and compiles deletion/insertion;
a call that compiled a piece is timed again, so the seconds stored are the method's.

Resume: the same command computes only the (method, variant, item) not marked done and not skipped.
The chunks are the same on every run (fixed from the item list), so a resumed chunk is explained in
the same company as the first time and gives the same values. Skipped items (an unreadable image, an
image without a box or mask for its class, a method that refused an image) are stored with their reason
and not retried unless `retry_skipped`.

Configuration hash: sha256 of the JSON of what changes a value — experiment and its options, model,
weights (the file's sha256, or 'pretrained'/'random'), input size and normalisation, dataset (its
`config()` with paths cut to their last part, so the same data mounted elsewhere is the same dataset;
seed; a hash of its item list), targets. Not in it: batch sizes, device, `--limit`, the gallery, the
world size, and the arms: the list of methods, the sizes of size-sweep, the layers of layers and the
methods of faithfulness's sweep are each an arm (method, variant) of their own, so one can be added to a
finished run. Each arm's options are recorded (table `arms`), and a resumed run that builds an arm of
the same name with other options is refused while it has results, since its rows would mix two settings,
unless `drop` names its method: that method's rows of the configuration are deleted first.

Explanations: a chunk's maps are shared by the arms that explain alike (faithfulness's sweep), and maps
of up to 64 × 64 pixels (`cache="small"`; "all" or "none") are kept in the store's explanation cache,
keyed by everything that determines them, so other experiments with the same targets, and a run resumed
after its metrics were interrupted, reuse them. Efficiency never reads the cache: it times each
explanation, one image at a time, after one untimed warm-up per method.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .. import compiled, frontend, runtime, tuning
from ..card import attach_card, model_card, model_dtype
from ..data import available_datasets, dataset_needs_model, dataset_source, open_dataset
from ..data.output import deferred_interrupt
from ..errors import JitterCamError
from ..inputs import parse_device, resolve_batch_size
from ..methods import CAMMethod, create
from ..methods.registry import method_list
from ..models import RANDOM, load_model
from ..words import plural
from . import distributed
from .experiments import Arm, Experiment, Setting, Unit, experiment_class
from .experiments.base import SWEEP
from .progress import Progress, estimate_line
from .store import ALL_METHODS, Batch, GalleryEntry, Row, Run, Store

CACHE_MODES = ("small", "all", "none")
DEFAULT_MODEL = "efficientnet_lite0"
SMALL_MAP = 64 * 64  # `cache="small"` keeps maps of at most this many pixels (CAM resolution, not input size)


@dataclass
class Settings:
    """One `jittercam bench` command, as the Python API takes it: `run(Settings("pointing", "offline", db))`.

    Attributes:
        experiment: a registered experiment's name (`available_experiments()`).
        dataset: a registered dataset's name or a dataset folder; None: the experiment's default.
        db: the results store (SQLite file), created if missing, resumed if it holds this configuration.
        model: a model name; None: the experiment's default, else EfficientNet-Lite0.
        methods: method names; None: the paper's rows of the experiment; `["all"]`: every method.
        weights: a local state dict, or "random"; None: the model's pretrained weights.
        device: a torch device name.
        batch_size: images per forward pass; None: the measured plan, else the device's default.
        seed: the seed of random weights, generated datasets and seeded methods.
        limit: the first N items of the dataset; None: all.
        gallery: items whose maps are kept for the report's gallery.
        input_size: a square input size other than the model's.
        compile: the methods that have a compiled path and deletion/insertion run through torch.compile
            (`jittercam.compiled`); None: they do where the run is long enough for it to pay
            (`jittercam.compiled.pays`: on a CPU, from about 10 minutes of such passes); the results stored do not
            depend on it.
        dataset_options: the dataset's own options (`--labels`, `--boxes`, ...); None values: not given.
        experiment_options: the experiment's options, parsed (`Option.parse`).
        method_options: method name (or '*' for all) -> its options.
        retry_skipped: compute items skipped before again.
        cache: which maps the store caches ("small", "all" or "none").
        quiet: print nothing but errors and warnings.
        drop: methods whose stored rows of this configuration are deleted first.
    """

    experiment: str
    dataset: str | None  # None: the experiment's default dataset (groundtruth), else an error
    db: Path
    model: str | None = None  # None: the experiment's default model, else DEFAULT_MODEL
    methods: Sequence[str] | None = None  # None: the experiment's paper rows; ["all"]: every method
    weights: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    seed: int = 0
    limit: int | None = None
    gallery: int = 4
    input_size: int | None = None
    compile: bool | None = None  # None: where it pays (`jittercam.compiled.pays`)
    dataset_options: dict[str, str | None] = field(default_factory=dict)
    experiment_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # name or '*' -> options
    retry_skipped: bool = False
    cache: str = "small"
    quiet: bool = False
    drop: Sequence[str] = ()  # methods whose stored rows (of this configuration) are deleted first


@dataclass
class Summary:
    """What a run did; `line()` is the line that ends it.

    Attributes:
        experiment: the experiment's name.
        db: the store (rank 0's under torchrun).
        computed: (method, item) pairs explained and stored by this run.
        stored: pairs stored before.
        skipped_before: pairs skipped before and not retried.
        skipped_items: items skipped now for every method.
        skipped: pairs skipped now for one method.
        rows: result rows written by this run.
        seconds: the run's wall time.
        interrupted: Ctrl-C ended the run (what was committed stays).
        main: this process reports (rank 0, or the only one).
        pairs: the command's (method, item) pairs, stored or not.
        store_rows: result rows of this configuration in the store(s) when the run ended.
        world_size: the number of ranks.
    """

    experiment: str
    db: Path
    computed: int = 0  # (method, sample) pairs explained and stored now
    stored: int = 0  # (method, sample) pairs stored before
    skipped_before: int = 0  # (method, sample) pairs skipped before (not retried)
    skipped_items: int = 0  # samples skipped now for every method
    skipped: int = 0  # (method, sample) pairs skipped now for one method
    rows: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    main: bool = True  # rank 0, or the only process: the one that reports
    pairs: int = 0  # (method, sample) pairs of the command, stored or not
    store_rows: int = 0  # result rows of this configuration in the store(s) when the run ended
    world_size: int = 1

    def where(self) -> str:
        return f"{self.db}" if self.world_size == 1 else f"the {self.world_size} stores beside {self.db}"

    def line(self) -> str:
        """The summary line that ends a run."""
        skips = f"{plural(self.skipped_items, 'item')} skipped"
        if self.skipped:
            skips += f" and {plural(self.skipped, '(method, item) pair')}"
        before = f", {self.skipped_before} skipped before (--retry-skipped)" if self.skipped_before else ""
        return (f"{self.experiment}: {plural(self.computed, 'explanation')} computed, {self.stored} already stored"
                f"{before}, {skips} (reasons in the skips table); {plural(self.rows, 'row')} in {self.seconds:.1f} s "
                f"-> {self.where()}")

    def interrupted_line(self) -> str:
        """What was kept when Ctrl-C ended the run: this run's part and the store's."""
        return (f"this run stored {plural(self.computed, 'explanation')} ({plural(self.rows, 'row')}); "
                f"{self.where()} now hold{'s' * (self.world_size == 1)} {self.stored + self.computed} of this "
                f"command's {self.pairs} explanations ({plural(self.store_rows, 'result row')} of this configuration)")


# --------------------------------------------------------------------------------------------- checks
def method_names(experiment: Experiment, specs: Sequence[str] | None) -> list[str]:
    """The methods to run: the experiment's paper rows by default; 'all' keeps the registry's methods the
    experiment can run; a name it cannot run is an error."""
    if not specs:
        return list(experiment.default_methods)
    names = method_list(list(specs), "methods")
    every = [name for spec in specs for name in spec.split(",")]
    for name in names:
        reason = experiment.accepts(name)
        if reason and name in every:
            raise JitterCamError(f"{experiment.name}: {reason}")
    names = [name for name in names if experiment.accepts(name) is None]
    if not names:
        raise JitterCamError(f"{experiment.name}: none of the methods asked for can take part")
    return names


def check_method_options(overrides: dict[str, dict[str, Any]], names: Sequence[str]) -> None:
    frontend.check_method_options(overrides, names)


def _options_for(name: str, settings: Settings) -> dict[str, Any]:
    """The options a method is built with: `batch_size` (None lets the method choose), the run's seed
    where it takes one, then `--option` overrides ('*' first, then the wrapper's name, then the full name)."""
    return frontend.options_for(name, {"batch_size": settings.batch_size, "seed": settings.seed,
                                       "compile": True if settings.compile else None}, settings.method_options)


describe = frontend.describe


def _path_free(config: dict[str, Any]) -> dict[str, Any]:
    return {key: Path(value).name if isinstance(value, str) and os.path.isabs(value) else value
            for key, value in config.items()}


def _description(arm: Arm) -> str:
    return json.dumps(describe(arm.explainer), sort_keys=True, default=repr)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_source(settings: Settings, model: torch.nn.Module) -> str | None:
    """The weights asked for, else the file a model read its default weights from (the ground-truth model's
    cache), so that retraining it changes the configuration."""
    return settings.weights if settings.weights is not None else model_card(model).weights_file


def weights_id(weights: str | None) -> str:
    if weights is None:
        return "pretrained"
    if weights == RANDOM:
        return RANDOM
    path = Path(weights)
    if not path.is_file():
        raise JitterCamError(f"weights file not found: {path}")
    return f"{path.name} sha256:{_file_digest(path)[:16]}"


def machine() -> str:
    """CPU model and cores, GPU name, torch version: where the seconds were measured."""
    return str(runtime.machine())


# ---------------------------------------------------------------------------------------------- the run
def run(settings: Settings, *, dataset=None, model: torch.nn.Module | None = None) -> Summary:
    """Run one benchmark command: explain, score and store every pending (method, item) pair.

    Args:
        settings: the command.
        dataset (BenchmarkDataset | None): an opened dataset to use instead of `settings.dataset` (tests, API).
        model: a model to use instead of `settings.model`.

    Returns:
        What was computed, stored and skipped; a Ctrl-C ends the run after the batch being committed,
        with `Summary.interrupted` set.

    Raises:
        JitterCamError: before anything is written, for a mistake in the settings.
    """
    experiment = experiment_class(settings.experiment)(**settings.experiment_options)
    names = method_names(experiment, settings.methods)
    check_method_options(settings.method_options, names)
    if settings.cache not in CACHE_MODES:
        raise JitterCamError(f"cache must be one of {', '.join(CACHE_MODES)}, got {settings.cache!r}", option="cache")
    if settings.limit is not None and settings.limit < 1:
        raise JitterCamError("limit must be at least 1", option="limit")
    if settings.gallery < 0:
        raise JitterCamError("gallery must be 0 or more", option="gallery")
    device = parse_device(settings.device)
    batch_size = resolve_batch_size(settings.batch_size, device)
    context = distributed.setup(device)
    try:
        summary = _run(settings, experiment, names, batch_size, context, dataset, model)
    except BaseException:
        distributed.abandon(context)  # no barrier: torchrun stops the other ranks when one fails
        raise
    distributed.finish(context)
    return summary


def _measured_batch(model: torch.nn.Module, device: torch.device, size: int, quiet: bool) -> int | None:
    """The measured plan's batch size, measuring it first (some 20 s on a CPU, once per machine) when the plan
    cache is on and has none; methods and metrics then read the same plan."""
    plan = tuning.cached_plan(model, device, size)
    if plan is None and tuning.cache_path() is not None:
        if not quiet:
            print(f"measuring the fastest batch size on {tuning.device_name(device)} (once) ...", file=sys.stderr)
        plan = tuning.tune(model, device, size)
    return None if plan is None else plan.batch_size


def _check_needs(experiment: Experiment, dataset) -> None:
    missing = set(experiment.needs) - set(dataset.has)
    if not missing:
        return
    if experiment.default_dataset:
        hint = f" (it runs on {experiment.default_dataset})"
    else:
        try:
            source = dataset_source(dataset.name)
        except JitterCamError:  # a stored name with a variant
            helps = {}
        else:
            helps = dict(source.option_help or {})
        # the option named after what is missing (ImageNet's boxes), else those of what it lacks
        named = [name for name in helps if name in missing] or [name for name in helps if name not in dataset.has]
        if len(named) == 1:
            option = named[0]
            raise JitterCamError(f"{option} ({helps[option]}) is needed: {experiment.name} needs "
                                 f"{' and '.join(sorted(missing))}, which dataset {dataset.name} does not have",
                                 option=option)
        hint = f" (its options: {'; '.join(f'{name}, {helps[name]}' for name in named)})" if named else ""
    raise JitterCamError(f"{experiment.name} needs {' and '.join(sorted(missing))}, which dataset {dataset.name} "
                         f"does not have{hint}")


def _run(settings, experiment, names, batch_size, context, dataset, model) -> Summary:
    started = time.perf_counter()
    device = context.device
    spec = settings.dataset or experiment.default_dataset
    if dataset is None:
        if spec is None:
            raise JitterCamError(f"{experiment.name} needs dataset: {', '.join(available_datasets())} or a "
                                 "dataset folder", option="dataset")
        experiment.check_dataset(settings.dataset)
        options = {**{k: v for k, v in settings.dataset_options.items() if v is not None},
                   **experiment.dataset_options()}
        if not dataset_needs_model(spec):  # before the model, so that a wrong dataset fails fast
            dataset = open_dataset(spec, seed=settings.seed, **options)
    if dataset is not None:
        _check_needs(experiment, dataset)
    if model is None:
        torch.manual_seed(settings.seed)  # random weights are the same in every rank and every run
        model = load_model(settings.model or experiment.default_model or DEFAULT_MODEL, weights=settings.weights)
    if dataset is None:  # a dataset drawn from its model (the ground truth's held-out configuration)
        dataset = open_dataset(spec, seed=settings.seed, model=model, **options)
        _check_needs(experiment, dataset)
        if settings.input_size not in (None, dataset.size):
            raise JitterCamError(f"the {dataset.name} images are {dataset.size} px: leave out input_size",
                                 option="input_size")
    model = model.to(device)
    card = model_card(model)
    if settings.input_size is not None:
        card = replace(card, input_size=settings.input_size)
        attach_card(model, card)
    if settings.batch_size is None:
        batch_size = _measured_batch(model, device, card.input_size, settings.quiet) or batch_size
    setting = Setting(model, tuple(card.mean), tuple(card.std), card.input_size, settings.batch_size,
                      tuple(card.fusion_layers), bool(settings.compile))
    chosen = [name for spec in settings.methods or () for name in spec.split(",") if name.strip() != "all"]

    def build_arms(compiling: bool, names: Sequence[str] = tuple(names)) -> list[Arm]:
        def build(name: str, **extra) -> CAMMethod:
            options = {**_options_for(name, replace(settings, compile=compiling or settings.compile)), **extra}
            if compiling and not settings.compile:  # chosen by the run: a model torch.fx cannot cut runs eagerly
                method = compiled.unless_refused(partial(create, name, model, **options))
                if method is not None:
                    return method
                options.pop("compile", None)
            return create(name, model, **options)

        now = replace(setting, compile=compiling or setting.compile)
        if chosen:  # every method named: a refusal is the error
            return experiment.arms(names, build, now)
        found = []  # the experiment's defaults or `all`: leave out, with a note, a method that refuses this model
        for name in names:
            try:
                found += experiment.arms([name], build, now)
            except JitterCamError as exc:
                if not compiling:
                    print(f"jittercam: note: {name} left out: {exc}", file=sys.stderr)
        if not found:
            raise JitterCamError(f"{experiment.name}: every method refuses this model")
        return found

    arms = build_arms(False)
    methods = list(dict.fromkeys(arm.method for arm in arms))
    for name in settings.drop:
        if name not in methods:
            raise JitterCamError(f"drop {name}: not one of this run's methods ({', '.join(methods)}); drop deletes "
                                 "a method's stored rows so that the run computes it again", option="drop")
    keys = list(dataset.keys())
    described = dataset.config() if hasattr(dataset, "config") else {"dataset": dataset.name}
    weights = weights_id(_weights_source(settings, model))
    identity = {
        "model": card.name,
        "weights": weights,
        "input_size": card.input_size, "mean": list(card.mean), "std": list(card.std),
        # paths by their last part: the same data mounted elsewhere (another node) is the same dataset
        "dataset": {**_path_free(described), "seed": settings.seed, "keys": _digest(keys)[:16],
                    "options": {k: Path(v).name for k, v in sorted(settings.dataset_options.items()) if v}},
    }
    options = experiment.config()
    hashed = {"experiment": experiment.name, **identity, "num_classes": int(dataset.num_classes),
              "targets": "ground truth" if experiment.truth_targets else "top-1", "options": options}
    # what a target index means, for the report's gallery: the dataset's classes when the ground truth is
    # explained, else the model's
    names = getattr(dataset, "categories", None) if experiment.truth_targets else card.categories
    config = {**hashed, "dataset_config": described, "methods": {a.label: repr(a.explainer) for a in arms},
              "batch_size": batch_size, "device": str(device), "limit": settings.limit,
              "world_size": context.world_size}
    run_record = Run(_digest(hashed), experiment.name, card.name, weights, dataset.name,
                     config, context.rank, context.world_size, machine(), settings.seed,
                     tuple(str(n) for n in names) if names else None)
    if settings.limit is not None:
        keys = keys[: settings.limit]
    showcase = set(experiment.showcase(keys, settings.gallery))
    mine = distributed.shard(keys, context)

    path = distributed.rank_path(Path(settings.db), context)
    with Store(path) as store:
        dropped = store.record_arms(run_record.config_hash, [(arm.method, arm.variant.label, _description(arm),
                                                              repr(arm.explainer)) for arm in arms], settings.drop)
        if context.main and not settings.quiet:
            for name, count in dropped.items():
                print(f"dropped {plural(count, 'result row')} of {name} from {path}", file=sys.stderr)
        store.register(run_record)
        if settings.retry_skipped:
            store.forget_skips(run_record.config_hash)
        worker = _Worker(settings, experiment, arms, setting, store, run_record, identity, showcase, context,
                         dataset, batch_size, partial(build_arms, True))
        summary = worker.run(mine)
        summary.store_rows = store.count("results", run_record.config_hash)
    summary.seconds = time.perf_counter() - started
    counts = distributed.total([summary.computed, summary.stored, summary.skipped_before, summary.skipped_items,
                                summary.skipped, summary.rows, summary.pairs, summary.store_rows,
                                int(summary.interrupted)], context)
    (summary.computed, summary.stored, summary.skipped_before, summary.skipped_items, summary.skipped,
     summary.rows, summary.pairs, summary.store_rows) = counts[:8]
    summary.interrupted = bool(counts[8])
    summary.main = context.main
    summary.world_size = context.world_size
    if context.main and not settings.quiet and not summary.interrupted:
        print(summary.line(), file=sys.stderr)
    return summary


class _Worker:
    """The loop over chunks for one process."""

    def __init__(self, settings, experiment, arms, setting, store, run_record, identity, showcase, context, dataset,
                 chunk: int, compiled_arms: Callable[[], list[Arm]] | None = None):
        self.settings, self.experiment, self.arms, self.setting = settings, experiment, arms, setting
        self.store, self.run_record, self.identity = store, run_record, identity
        self.showcase, self.context = showcase, context
        self.model = setting.model
        self.device = context.device
        self.dtype = model_dtype(self.model)
        self.dataset = dataset
        self.warm: set[int] = set()
        self.memo: dict[str, tuple[torch.Tensor, float]] = {}
        self.chunk = chunk  # images loaded and explained together
        self.compiled_arms = compiled_arms  # the arms built again to run compiled, when the run chooses to
        self._describe()

    def _describe(self) -> None:
        self.descriptions = {id(arm): describe(arm.explainer) for arm in self.arms}
        if getattr(self.experiment, "reference", None) is not None:
            self.descriptions[id(self.experiment.reference)] = describe(self.experiment.reference.explainer)

    def run(self, keys: list[str]) -> Summary:
        settings = self.settings
        summary = Summary(self.experiment.name, Path(settings.db))
        key_hash = self.run_record.config_hash
        done = self.store.done(key_hash)
        skipped = self.store.skipped(key_hash)

        def stored(arm: Arm, key: str) -> bool:
            return (arm.method, arm.variant.label, key) in done

        def refused(arm: Arm, key: str) -> bool:
            return (ALL_METHODS, key) in skipped or (arm.label, key) in skipped

        def pending(arm: Arm, key: str) -> bool:
            return not stored(arm, key) and not refused(arm, key)

        pairs = [(arm, key) for key in keys for arm in self.arms]
        summary.pairs = len(pairs)
        summary.stored = sum(stored(arm, key) for arm, key in pairs)
        summary.skipped_before = sum(not stored(arm, key) and refused(arm, key) for arm, key in pairs)
        left = {arm: sum(pending(arm, key) for key in keys) for arm in self.arms}
        speaks = not settings.quiet and self.context.main
        if settings.compile is None and self.compiled_arms is not None and self._compile_pays(left, speaks):
            left = {arm: sum(pending(arm, key) for key in keys) for arm in self.arms}
        forward = self._pass_seconds if speaks and any(left.values()) else None
        metric = self._metric_seconds([key for key in keys if any(pending(arm, key) for arm in self.arms)]) \
            if forward is not None else None
        if forward is not None:
            print(estimate_line(self.experiment.name, left, self._unit_passes, forward, self.device, metric),
                  file=sys.stderr)
        bar = tqdm(total=sum(left.values()), desc=self.experiment.name, unit="map", file=sys.stderr,
                   disable=not (speaks and sys.stderr.isatty()), dynamic_ncols=True,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}, {rate_fmt}]")
        prior = {arm: self._unit_passes(arm) * (forward or 0.0) + (metric or {}).get(arm, 0.0) for arm in self.arms}
        self.progress = Progress(bar, left, prior, log=self.experiment.name if speaks else None)
        chunk = self.chunk
        try:
            with bar, self.progress:
                for start in range(0, len(keys), chunk):
                    part = keys[start : start + chunk]
                    work = {key: [arm for arm in self.arms if pending(arm, key)] for key in part}
                    if any(work.values()):
                        self._chunk(part, work, summary)
        except KeyboardInterrupt:
            summary.interrupted = True
        return summary

    def _compile_pays(self, left: dict[Arm, int], speaks: bool) -> bool:
        """Build the arms again compiled where their compilable forward passes are long enough for torch.compile
        to pay and it runs here (`compiled.choose`); True when it did. Not where most maps are made on copies
        of the model (the sanity check's randomised ones): compiled pieces are kept per model, so each copy
        would compile them again."""
        if self.experiment.explanations_per_unit() > 1:
            return False
        compilable = [arm for arm in self.arms if left[arm] and getattr(arm.explainer, "compiles", False)]
        passes = sum(left[arm] * self._unit_passes(arm) for arm in compilable)
        methods = list(dict.fromkeys(arm.method for arm in compilable))
        # + 1: the metrics' forward (deletion/insertion's), which most experiments compile too
        pieces = compiled.pieces((arm.explainer for arm in compilable), self.setting.input_size) + 1
        chosen, line = compiled.choose(self.device, passes, lambda: self._pass_seconds, methods, pieces)
        if line and speaks:
            print(f"{self.experiment.name}: {line}", file=sys.stderr)
        if chosen:
            assert self.compiled_arms is not None
            self.arms = self.compiled_arms()
            self.setting = replace(self.setting, compile=True)
            self._describe()
        return chosen

    def _passes(self, arm: Arm) -> int:
        """Forward passes of one explanation of `arm` (its method's count)."""
        return int(arm.explainer.passes(self.setting.input_size))

    def _unit_passes(self, arm: Arm) -> int:
        """Forward passes of the maps one unit of `arm` costs (the sanity check's randomised ones too)."""
        return self._passes(arm) * self.experiment.explanations_per_unit()

    @cached_property
    def _pass_seconds(self) -> float:
        """Seconds of one image's forward pass on this device (`tuning.forward_seconds`), measured once."""
        return tuning.forward_seconds(self.model, self.device, self.setting.input_size)

    def _metric_seconds(self, keys: list[str]) -> dict[Arm, float] | None:
        """Seconds the experiment's metrics spend on one unit of each arm beyond its explanation (deletion's
        passes, ROAD's imputation, faithfulness's sweep of 22 maps): `score` timed once per arm on the first
        loadable item of `keys`, with the centre baseline's smooth map (no passes) in the arm's place,
        nothing stored. None where that says nothing: an experiment whose cost is its own explanations (the
        sanity check) or that shares work between the arms (`prepare`), or no item to time it on."""
        experiment = self.experiment
        if experiment.explanations_per_unit() > 1 or type(experiment).prepare is not Experiment.prepare:
            return None
        for key in keys[:8]:
            sample = self.dataset.load(key, model_card(self.model))
            if sample.skip is not None or sample.image is None:
                continue
            images = sample.image[None].to(self.device, self.dtype)
            top1 = None
            if not experiment.truth_targets:
                with torch.no_grad():
                    top1 = int(self.model(images).argmax(dim=1))
            units = experiment.units(sample, 0, top1)[0][:1]
            if not units:
                continue
            centre = create("centre", self.model)
            eager = replace(self.setting, compile=False)  # compiling is not the metrics' pace
            targets = torch.tensor([units[0].target], device=self.device)
            seconds: dict[Arm, float] = {}
            for arm in self.arms:
                stand_in = replace(arm, explainer=centre)
                maps = centre(experiment.inputs(stand_in, images)[:1], targets)
                try:
                    started = time.perf_counter()
                    experiment.score(eager, stand_in, images, units, maps.float(), [0.0], None)
                    seconds[arm] = time.perf_counter() - started
                except Exception:  # noqa: BLE001 - an estimate never stops a run; its own items say what is wrong
                    return None
            return seconds
        return None

    # --------------------------------------------------------------------------------------- one chunk
    def _chunk(self, keys: list[str], work: dict[str, list[Arm]], summary: Summary) -> None:
        dataset = self.dataset
        progress = self.progress
        samples, skips = [], []
        for key in keys:
            if not work[key]:
                continue
            sample = dataset.load(key, model_card(self.model))
            if sample.skip is not None or sample.image is None:
                skips.append((ALL_METHODS, key, sample.skip or "no image"))
                summary.skipped_items += 1
                progress.skipped(work[key])
            else:
                samples.append(sample)
        units: list[Unit] = []
        self.memo = {}  # this chunk's maps, by cache key: arms that explain alike share them
        if samples:
            images = torch.stack([s.image for s in samples]).to(self.device, self.dtype)
            top1 = [None] * len(samples)
            if not self.experiment.truth_targets:
                with torch.no_grad():
                    top1 = self.model(images).argmax(dim=1).tolist()
            for row, sample in enumerate(samples):
                found, missing = self.experiment.units(sample, row, top1[row])
                skips += [(ALL_METHODS, item, reason) for item, reason in missing]
                if not found:
                    if not any(item == sample.key for item, _ in missing):
                        reason = "; ".join(reason for _, reason in missing) or "nothing to evaluate"
                        skips.append((ALL_METHODS, sample.key, reason))
                    summary.skipped_items += 1
                    progress.skipped(work[sample.key])
                units += found
        if skips:
            with deferred_interrupt():
                self.store.commit(self.run_record, Batch([], [], [], skips))
        if not units:
            return
        state = self.experiment.prepare(self.setting, images, units, self._explain)
        for arm in self.arms:
            mine = [unit for unit in units if arm in work[unit.key]]
            for group in self._groups(arm, mine):
                # an arm's own subset of the chunk gets the shared work for that subset (from the chunk's maps)
                shared = state if len(group) == len(units) else self.experiment.prepare(self.setting, images, group,
                                                                                      self._explain)
                started = time.perf_counter()
                explained = self._arm(arm, images, group, shared, summary)
                progress.finished(arm, len({unit.key for unit in group}),
                                  time.perf_counter() - started if explained else None)

    def _groups(self, arm: Arm, units: list[Unit]) -> list[list[Unit]]:
        """`units` explained and committed together: all of them, or one item's at a time for an arm whose one
        explanation fills a chunk's forward passes by itself (RISE, Score-CAM, Jitter-CAM on a CPU), which loses
        no speed and keeps each finished item when Ctrl-C stops the run. Fixed by the arm and the chunk, so that
        a resumed run explains each item in the same company."""
        if not units or self._passes(arm) < self.chunk:
            return [units] if units else []
        by_key: dict[str, list[Unit]] = {}
        for unit in units:
            by_key.setdefault(unit.key, []).append(unit)
        return list(by_key.values())

    def _arm(self, arm: Arm, images, units: list[Unit], state, summary: Summary) -> bool:
        """Explain and score `units` with `arm` and commit them; False when the method or a metric refused
        them (stored as skips)."""
        keys = list(dict.fromkeys(unit.key for unit in units))
        try:
            maps, seconds = self._explain(arm, images, units)
            scores = self.experiment.score(self.setting, arm, images, units, maps, seconds, state)
        except JitterCamError as exc:  # the method or the metric refused these images: skip, go on
            batch = Batch([], [], [], [(arm.label, key, str(exc)) for key in keys])
            with deferred_interrupt():
                self.store.commit(self.run_record, batch)
            summary.skipped += len(keys)
            return False
        except torch.OutOfMemoryError:
            raise JitterCamError(f"out of memory on {self.device} in {arm.label}; try a smaller batch_size",
                                 option="batch_size") from None
        except Exception as exc:
            if getattr(arm.explainer, "compile", None) is None and not self.setting.compile:
                raise
            lines = str(exc).strip().splitlines()
            raise JitterCamError(f"{arm.label} failed compiled ({type(exc).__name__}: {lines[0] if lines else ''}); "
                                 "the same command with --no-compile resumes eagerly", option="compile") from exc
        seconds_of = {id(unit): spent for unit, spent in zip(units, seconds, strict=True)}
        rows = [Row(arm.method, v.variant.label, v.variant.parameter, v.variant.number, v.unit.item, v.unit.target,
                    v.metric, v.value, None if v.curve is None else v.curve.detach().float().cpu().numpy(),
                    seconds_of[id(v.unit)]) for v in scores.values]
        gallery = self._gallery(arm, units, maps)
        done = [(arm.method, arm.variant.label, key) for key in keys]
        with deferred_interrupt():
            self.store.commit(self.run_record, Batch(rows, gallery, done, []))
        summary.computed += len(keys)
        summary.rows += len(rows)
        return True

    def _gallery(self, arm: Arm, units: list[Unit], maps: torch.Tensor) -> list[GalleryEntry]:
        entries: list[GalleryEntry] = []
        seen: set[str] = set()
        if not arm.gallery:
            return entries
        for index, unit in enumerate(units):
            if unit.key in self.showcase and unit.key not in seen:
                seen.add(unit.key)
                method = arm.method if arm.variant == SWEEP else arm.label
                entries.append(GalleryEntry(method, unit.item, unit.target, self._png(unit.sample.image),
                                            maps[index].detach().float().cpu().numpy()))
        return entries

    def _png(self, image: torch.Tensor) -> bytes:
        mean = torch.tensor(self.setting.mean).view(3, 1, 1)
        std = torch.tensor(self.setting.std).view(3, 1, 1)
        pixels = (image.detach().float().cpu() * std + mean).clamp(0, 1)
        array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        stream = io.BytesIO()
        Image.fromarray(array).save(stream, format="PNG")
        return stream.getvalue()

    # ---------------------------------------------------------------------------------- explanations
    def _explain(self, arm: Arm, images: torch.Tensor, units: list[Unit]) -> tuple[torch.Tensor, list[float]]:
        """Maps `(N, h, w)` float32 for `units` (and seconds per unit), from the cache when allowed."""
        inputs = self.experiment.inputs(arm, images)
        pixels = int(inputs.shape[-1])
        cache_keys = [self._cache_key(arm, unit, pixels) for unit in units]
        if self.experiment.reads_cache and all(key in self.memo for key in cache_keys):  # another arm's maps
            return torch.stack([self.memo[key][0] for key in cache_keys]), [self.memo[key][1] for key in cache_keys]
        if self.settings.cache != "none" and self.experiment.reads_cache:
            found = self.store.cached_maps(cache_keys)
            if len(found) == len(units):  # all or nothing: a chunk is explained in the same company
                maps = torch.from_numpy(np.stack([found[key][0] for key in cache_keys])).to(self.device)
                return maps, [found[key][1] for key in cache_keys]
        several = len({unit.row for unit in units}) < len(units)
        if several and not self.experiment.one_at_a_time:  # several classes of one image: one call for them
            maps, seconds = self._explain_per_image(arm, inputs, units)
            return self._keep(arm, units, cache_keys, maps.detach().float(), seconds)
        x = inputs[torch.tensor([unit.row for unit in units], device=self.device)]
        targets = torch.tensor([unit.target for unit in units], dtype=torch.long, device=self.device)
        if self.experiment.one_at_a_time:
            if id(arm) not in self.warm:  # lazy set-up (probes, cuDNN's choices) is not the method's cost
                arm.explainer(x[:1], targets[:1])
                self.warm.add(id(arm))
            parts, seconds = [], []
            for index in range(len(units)):
                part, spent = self._timed(arm, x[index : index + 1], targets[index : index + 1])
                parts.append(part)
                seconds.append(spent)
            maps = torch.cat(parts)
        else:
            maps, spent = self._timed(arm, x, targets)
            seconds = [spent / len(units)] * len(units)
        return self._keep(arm, units, cache_keys, maps.detach().float(), seconds)

    def _keep(self, arm: Arm, units: list[Unit], cache_keys: list[str], maps: torch.Tensor,
              seconds: list[float]) -> tuple[torch.Tensor, list[float]]:
        """Remember the maps for the other arms of this run and cache them in the store when allowed."""
        self.memo.update({key: (m, spent) for key, m, spent in zip(cache_keys, maps, seconds, strict=True)})
        if self._cacheable(maps):
            entries = [(key, arm.label, unit.item, unit.target, m.cpu().numpy(), spent)
                       for key, unit, m, spent in zip(cache_keys, units, maps, seconds, strict=True)]
            with deferred_interrupt():
                self.store.cache_maps(entries)
        return maps, seconds

    def _explain_per_image(
        self, arm: Arm, inputs: torch.Tensor, units: list[Unit]
    ) -> tuple[torch.Tensor, list[float]]:
        """Maps for units several of which explain one image (the pointing game's classes): each image once,
        with its K classes as a `(R, K)` target (one forward and K backward passes for a gradient CAM),
        images grouped by K; the time is shared equally among the units."""
        by_row: dict[int, list[int]] = {}
        for index, unit in enumerate(units):
            by_row.setdefault(unit.row, []).append(index)
        by_count: dict[int, list[int]] = {}
        for row, indices in by_row.items():
            by_count.setdefault(len(indices), []).append(row)
        found: list[torch.Tensor | None] = [None] * len(units)
        total = 0.0
        for count, rows in by_count.items():
            classes = torch.tensor([[units[i].target for i in by_row[row]] for row in rows], device=self.device)
            x = inputs[torch.tensor(rows, device=self.device)]
            part, spent = self._timed(arm, x, classes if count > 1 else classes[:, 0])
            part = part if count > 1 else part[:, None]
            total += spent
            for row, per_class in zip(rows, part, strict=True):
                for index, one in zip(by_row[row], per_class, strict=True):
                    found[index] = one
        maps = torch.stack([one for one in found if one is not None])
        return maps, [total / len(units)] * len(units)

    def _timed(self, arm: Arm, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The maps and their seconds; a call that compiled a piece of the model (its first at a new shape) is
        timed again, so that the seconds stored are the method's, not torch.compile's."""
        call = partial(arm.explainer, x, targets)
        if getattr(arm.explainer, "compile", None) is None:
            return runtime.timed(call, self.device)
        pieces = compiled.cached_entries(self.model)
        result = runtime.timed(call, self.device)
        return runtime.timed(call, self.device) if compiled.cached_entries(self.model) != pieces else result

    def _cacheable(self, maps: torch.Tensor) -> bool:
        mode = self.settings.cache
        return mode == "all" or (mode == "small" and maps.shape[-1] * maps.shape[-2] <= SMALL_MAP)

    def _cache_key(self, arm: Arm, unit: Unit, pixels: int) -> str:
        return _digest({**self.identity, "method": self.descriptions[id(arm)], "item": unit.key,
                        "target": unit.target, "pixels": pixels})
