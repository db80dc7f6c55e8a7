"""Names and folders → benchmark datasets. A dataset registers itself where it is defined:

    @register_dataset("my-set", title="my set", folder="a folder of my-set images",
                      recognises=lambda root, options: (root / "my-set.json").is_file(), num_classes=10)
    def _open(root: Path, seed: int, model: nn.Module | None, *, labels: str | None = None) -> MySet:
        return MySet(root, labels=labels)

The opener's keyword-only parameters are the dataset's options. A dataset with `recognises` is opened from
a folder that it recognises (the first to recognise it, in registration order); one without is opened by
its name. `from_model=True` says that the dataset is drawn from the model it is evaluated on, so that a
caller loads the model first (`dataset_needs_model`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import JitterCamError
from .base import BenchmarkDataset

Opener = Callable[..., BenchmarkDataset]  # (spec, seed, model, **options) -> dataset
Recogniser = Callable[[Path, Mapping[str, Any]], bool]  # (folder, options given) -> is it mine


@dataclass(frozen=True)
class DatasetSource:
    """A registered dataset: everything the library knows of it before opening it."""

    name: str  #: its name: what results are stored under, and the spec of a dataset opened by name
    title: str  #: how messages name it ("COCO", "the offline dataset")
    opener: Opener
    options: tuple[str, ...]  #: the opener's keyword-only parameters
    recognises: Recogniser | None = None  #: None: opened by its name only
    folder: str = ""  #: what a folder of it holds, for the list of datasets in messages
    from_model: bool = False
    num_classes: int | None = None  #: None: it depends on the files or on the model
    option_help: Mapping[str, str] | None = None  #: option -> what to give it, for help texts

    @property
    def expected(self) -> str:
        return self.folder if self.recognises is not None else repr(self.name)


_SOURCES: dict[str, DatasetSource] = {}


def register_dataset(
    name: str,
    *,
    title: str,
    recognises: Recogniser | None = None,
    folder: str = "",
    from_model: bool = False,
    num_classes: int | None = None,
    option_help: Mapping[str, str] | None = None,
) -> Callable[[Opener], Opener]:
    """Decorator: make the opener `opener(spec, seed, model, **options)` open the dataset `name`.

    Args:
        name: the dataset's name (a name-only dataset is opened by it).
        title: how messages name the dataset.
        recognises: `recognises(folder, options)`, whether a folder holds this dataset; it may raise
            `JitterCamError` for an option that names a missing file. None: opened by `name` only.
        folder: what such a folder holds, in words (folder datasets).
        from_model: the dataset is drawn from the model it is evaluated on (`model` is never None then).
        num_classes: the class count, when it is fixed.
        option_help: what each option takes, in words (the command line's help).

    Returns:
        The decorator; it returns the opener unchanged.

    Raises:
        ValueError: `name` is taken, or a folder dataset does not say what its folder holds.
    """

    def decorator(opener: Opener) -> Opener:
        if name in _SOURCES:
            raise ValueError(f"dataset name {name!r} is taken")
        if recognises is not None and not folder:
            raise ValueError(f"dataset {name!r} recognises folders: say what they hold (folder=...)")
        parameters = inspect.signature(opener).parameters.values()
        options = tuple(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)
        _SOURCES[name] = DatasetSource(name, title, opener, options, recognises, folder, from_model, num_classes,
                                       option_help)
        return opener

    return decorator


def available_datasets() -> list[str]:
    """The registered datasets' names.

    Returns:
        The names in registration order (the order folders are recognised in).
    """
    return list(_SOURCES)


def dataset_source(name: str) -> DatasetSource:
    """The registered dataset `name`.

    Args:
        name: a registered dataset's name.

    Returns:
        What the library knows of the dataset before opening it.

    Raises:
        JitterCamError: no dataset is registered under `name`.
    """
    if name not in _SOURCES:
        raise JitterCamError(f"unknown dataset {name!r}; choose from: {', '.join(_SOURCES)}")
    return _SOURCES[name]


def dataset_num_classes(name: str) -> int | None:
    """The class count of the registered dataset `name`, when it is fixed.

    Args:
        name: a dataset's name as results store it.

    Returns:
        The count; None when it depends on the files or the model, or when no dataset is registered under
        `name` (a dataset's stored name may carry a variant, `groundtruth-45deg`).
    """
    source = _SOURCES.get(name)
    return None if source is None else source.num_classes


def dataset_needs_model(spec: str | Path) -> bool:
    """Whether `spec` names a dataset drawn from its model, to be opened once the model is loaded.

    Args:
        spec: a dataset's name or a folder, as `open_dataset` takes it. Nothing is read.

    Returns:
        True for a registered `from_model` dataset; False otherwise, also for a spec that names no dataset
        (`open_dataset` then says why).
    """
    source = _SOURCES.get(spec) if isinstance(spec, str) else None
    return source is not None and source.from_model


def describe_datasets() -> str:
    """The datasets in words, for messages.

    Returns:
        The named datasets, then what a dataset folder may hold: `'offline', ..., or a folder of ...`.
    """
    named = [s.expected for s in _SOURCES.values() if s.recognises is None]
    folders = [s.expected for s in _SOURCES.values() if s.recognises is not None]
    choices = named + folders
    return ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 1 else "".join(choices)


def find_dataset(spec: str | Path, options: Mapping[str, Any] | None = None) -> DatasetSource:
    """The registered dataset `spec` names, or the first one that recognises the folder `spec`.

    Args:
        spec: a registered name (a `str`), else a folder.
        options: the options given (with their values), which a folder's recognition may use.

    Returns:
        The registered dataset.

    Raises:
        JitterCamError: the path does not exist, is not a folder, or no dataset recognises it.
    """
    if isinstance(spec, str) and spec in _SOURCES and _SOURCES[spec].recognises is None:
        return _SOURCES[spec]
    root = Path(spec).expanduser()
    if not root.exists():
        raise JitterCamError(f"no such dataset: {spec} (expected {describe_datasets()})")
    if not root.is_dir():
        raise JitterCamError(f"not a folder: {spec} (expected {describe_datasets()})")
    for source in _SOURCES.values():
        if source.recognises is not None and source.recognises(root, options or {}):
            return source
    raise JitterCamError(f"no dataset recognised in {spec}: expected {describe_datasets()}")


def open_dataset(
    spec: str | Path, *, seed: int = 0, model: nn.Module | None = None, **options: Any
) -> BenchmarkDataset:
    """The dataset named by `spec` (a registered name, or a folder a registered dataset recognises).

    Args:
        spec: see `find_dataset`. (A folder that happens to bear a dataset's name is `./name`.)
        seed: the seed of a generated dataset.
        model: the model a dataset drawn from its model is made for (`dataset_needs_model`).
        **options (Any): the dataset's options (its opener's keyword-only parameters); None means not
            given.

    Returns:
        The opened dataset: `keys()`, then `load(key, card)` gives each `Sample`.

    Raises:
        JitterCamError: in one line, for an unknown spec, an option the dataset does not take, a missing
            model, or the dataset's own complaints.
    """
    given = {key: value for key, value in options.items() if value is not None}
    source = find_dataset(spec, given)
    for option in given:
        if option not in source.options:
            raise JitterCamError(f"{option} does not apply to {source.title}", option=option)
    if source.from_model and model is None:
        raise JitterCamError(f"{source.title} is drawn from its model: pass model", option="model")
    target = spec if source.recognises is None else Path(spec).expanduser()
    return source.opener(target, seed, model, **given)
