"""Names → method classes. A method registers itself where it is defined (`@register_method("name")`);
a wrapper (`@register_wrapper("jittercam")`) turns a class activation map into another one, spelled
`WRAPPER:BASE` — and wrappers nest: `guided:jittercam:gradcam` is Guided Jitter-CAM.

Which bases a wrapper takes (`available_methods` lists exactly these, `create` builds nothing else):

* every wrapper weighs, enlarges or sharpens a *class activation map*: its base must read a target layer's
  activations for the class (`uses_layer`). The baselines (`centre`, `random`, `constant`), RISE and Guided
  Backprop read no layer (they draw a fixed map, mask the input, or take the input's gradient): Jitter-CAM or
  Upscale-CAM of them is not defined, and Guided Backprop ⊙ them is no class map (`guided:guidedbackprop`
  would square the guided gradients);
* a wrapper never wraps itself (`guided:guided:gradcam`);
* `jittercam` and `upscale` also need the base's map at the target layer's resolution (`layer_map`), since
  they place patch maps cell by cell on that grid: not CAMERAS, nor another wrapper; `guided` takes a map at
  any resolution (it resizes it to the input's), so `guided:cameras` and `guided:jittercam` are fine.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..errors import JitterCamError
from .base import CAMMethod

_METHODS: dict[str, type[CAMMethod]] = {}
_WRAPPERS: dict[str, _Wrapper] = {}
# options that describe the base method's layer and input; a wrapper passes them on to its base
_BASE_OPTIONS = {"target_layer", "input_size"}
_SHARED_OPTIONS = {"batch_size", "precision", "compile"}  # a wrapper and its base both take these


@dataclass(frozen=True)
class _Wrapper:
    cls: type[CAMMethod]
    default_base: str
    needs_layer_map: bool  # the base must give maps at its target layer's resolution
    # (every base must read a layer's activations for the class: see the module's docstring)


def register_method(name: str) -> Callable[[type[CAMMethod]], type[CAMMethod]]:
    """Class decorator: make a method available to `create`, the CLI and the benchmark under `name`.

    Args:
        name: the registry name (no ':'; `jittercam list` shows it).

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: `name` is taken or contains ':'.
    """

    def decorator(cls: type[CAMMethod]) -> type[CAMMethod]:
        _check_free(name)
        _METHODS[name] = cls
        return cls

    return decorator


def register_wrapper(
    name: str, default_base: str = "gradcam", needs_layer_map: bool = True
) -> Callable[[type[CAMMethod]], type[CAMMethod]]:
    """Class decorator for a method built around a class activation map: its constructor takes
    `(model, base, ...)` with `base` a built method.

    Args:
        name: the wrapper's registry name; `name` alone means `name:default_base`.
        default_base: the base of the bare name.
        needs_layer_map: the base's map must be at its layer's resolution (Jitter-CAM's patches are laid
            out on that grid); which bases a wrapper takes is the rule of the module's docstring.

    Returns:
        The decorator; it returns the class unchanged.

    Raises:
        ValueError: `name` is taken or contains ':'.
    """

    def decorator(cls: type[CAMMethod]) -> type[CAMMethod]:
        _check_free(name)
        _WRAPPERS[name] = _Wrapper(cls, default_base, needs_layer_map)
        return cls

    return decorator


def _check_free(name: str) -> None:
    if ":" in name or name in _METHODS or name in _WRAPPERS:
        raise ValueError(f"method name {name!r} is taken or contains ':'")


def available_methods() -> list[str]:
    """The names `create` builds, as `jittercam list` shows them.

    Returns:
        Every plain name, sorted, then each wrapper and the wrapper over each base it accepts
        (`jittercam:scorecam`, ...); nested wrappers (`guided:jittercam`) are accepted too but not listed.
    """
    names = sorted(_METHODS)
    for wrapper_name in sorted(_WRAPPERS):
        names.append(wrapper_name)
        names += [f"{wrapper_name}:{base}" for base in bases(wrapper_name)]
    return names


def default_names() -> list[str]:
    """Every plain method and every wrapper over its default base, in the order they were registered:
    what `compare --methods all` draws."""
    return list(_METHODS) + list(_WRAPPERS)


def _refusal(wrapper: _Wrapper, base: type[CAMMethod]) -> str | None:
    """Why `wrapper` cannot wrap `base` (the rule of the module's docstring), or None when it can."""
    if issubclass(base, wrapper.cls):
        return "it does not wrap itself"
    if wrapper.needs_layer_map and not base.layer_map:
        return "it needs a map at the target layer's resolution, and {base}'s is not"
    if not base.uses_layer:
        return "it needs a class activation map of a layer, and {base} reads no layer's activations"
    return None


def _accepts(wrapper: _Wrapper, base: type[CAMMethod]) -> bool:
    return _refusal(wrapper, base) is None


def bases(wrapper_name: str) -> list[str]:
    """The plain methods the wrapper `wrapper_name` takes as its base, sorted."""
    wrapper = _WRAPPERS[wrapper_name]
    return [base for base in sorted(_METHODS) if _accepts(wrapper, _METHODS[base])]


def _offered(wrapper_name: str) -> str:
    """`wrapper_name`'s bases in words, with the wrappers it takes around them."""
    inner = [name for name, other in sorted(_WRAPPERS.items()) if _accepts(_WRAPPERS[wrapper_name], other.cls)]
    return ", ".join(bases(wrapper_name)) + (f" (and {', '.join(inner)} over them)" if inner else "")


def _unknown(name: str) -> JitterCamError:
    choices = sorted(_METHODS) + [f"{w}[:BASE]" for w in sorted(_WRAPPERS)]
    return JitterCamError(f"unknown method {name!r}; choose from: {', '.join(choices)}")


def _takes_no_base(name: str, spelled: str) -> JitterCamError:
    wrappers = ", ".join(f"{w}:BASE" for w in sorted(_WRAPPERS))
    return JitterCamError(f"method {spelled!r}: {name} takes no base; only the wrappers do ({wrappers}; "
                          "`jittercam list` shows their bases)")


def _parse(name: str) -> list[str]:
    """`guided:jittercam:scorecam` → ['guided', 'jittercam', 'scorecam'], defaults filled in and every
    part checked; raises `JitterCamError` for a name `create` would not build."""
    if not isinstance(name, str) or not name:
        raise JitterCamError(f"a method name must be a non-empty string, got {name!r}")
    parts = name.split(":")
    if parts[-1] in _WRAPPERS:
        parts.append(_WRAPPERS[parts[-1]].default_base)
    *wrappers, base = parts
    for wrapper_name in wrappers:
        if wrapper_name in _METHODS:
            raise _takes_no_base(wrapper_name, name)
        if wrapper_name not in _WRAPPERS:
            raise _unknown(wrapper_name)
    if base not in _METHODS:
        raise _unknown(base if wrappers else name)
    inner, inner_name = _METHODS[base], base
    for wrapper_name in reversed(wrappers):
        wrapper = _WRAPPERS[wrapper_name]
        reason = _refusal(wrapper, inner)
        if reason is not None:
            raise JitterCamError(f"method {name!r}: {wrapper_name} cannot wrap {inner_name}: "
                                 f"{reason.format(base=inner_name)}; its bases: {_offered(wrapper_name)}")
        inner, inner_name = wrapper.cls, wrapper_name
    return parts


def method_class(name: str) -> type[CAMMethod]:
    """The class `create(name, ...)` builds.

    Args:
        name: a method name, `WRAPPER:BASE` included.

    Returns:
        The class; the outermost wrapper's for `WRAPPER:BASE`.

    Raises:
        JitterCamError: `create` would not build `name` (unknown, or a combination that means nothing).
    """
    parts = _parse(name)
    return _WRAPPERS[parts[0]].cls if len(parts) > 1 else _METHODS[parts[0]]


def method_options(name: str) -> set[str]:
    """The options `create(name, model, **options)` accepts.

    Args:
        name: a method name, `WRAPPER:BASE` included.

    Returns:
        The keyword options of every part of the name (`model`, `base` and `layer` left out).

    Raises:
        JitterCamError: `create` would not build `name`.
    """
    parts = _parse(name)
    classes = [_WRAPPERS[part].cls for part in parts[:-1]] + [_METHODS[parts[-1]]]
    return set().union(*(_own_options(cls) for cls in classes)) - {"model", "base", "layer"}


def method_list(specs: list[str], option: str = "methods") -> list[str]:
    """Names from comma-separated `specs` (as a command line gives them, once or repeated), each checked,
    duplicates dropped; 'all' stands for `default_names()`. `option` names the parameter they came from,
    in the error and as its `option`."""
    names = [name.strip() for spec in specs for name in spec.split(",") if name.strip()]
    names = [expanded for name in names for expanded in (default_names() if name == "all" else [name])]
    if not names:
        raise JitterCamError(f"{option} names no method", option=option)
    for name in names:
        check_method_name(name)
    return list(dict.fromkeys(names))


def check_method_name(name: str) -> None:
    """Check a method name without building anything.

    Args:
        name: a method name, `WRAPPER:BASE` included.

    Raises:
        JitterCamError: `create` would not build `name`, saying why (an unknown name, a method that takes
            no base, a base the wrapper cannot wrap).
    """
    _parse(name)


def _own_options(cls: type) -> set[str]:
    """The keyword arguments `cls(...)` accepts, following `**kwargs` up to the parents' constructors."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names - {"self"}


def create(name: str, model: nn.Module, **options) -> CAMMethod:
    """Build the method called `name` for `model`.

    Args:
        name: a registered name (`gradcam`) or `WRAPPER:BASE` (`jittercam:scorecam`).
        model (nn.Module): the classifier to explain.
        **options (Any): the method's constructor options (`target_layer`, `batch_size`, `input_size`, and
            each method's own, e.g. Jitter-CAM's `size`). For `WRAPPER:BASE`, an option the wrapper's
            constructor names goes to the wrapper, the layer and input options go to the base, and
            `batch_size`, `precision` and `compile` to both.

    Returns:
        The built method: call it (or its `attribute`) on `(B, 3, H, W)` images and a target.

    Raises:
        JitterCamError: an unknown name, a combination that means nothing, or an option the method refuses.
    """
    return _build(_parse(name), model, options)


def _build(parts: list[str], model: nn.Module, options: dict) -> CAMMethod:
    head, rest = parts[0], parts[1:]
    if not rest:
        return _construct(_METHODS[head], head, options, model)
    wrapper = _WRAPPERS[head].cls
    accepted = _own_options(wrapper) - {"self", "model", "base"}
    mine = {key: value for key, value in options.items() if key in accepted and key not in _BASE_OPTIONS}
    theirs = {key: value for key, value in options.items() if key not in mine or key in _SHARED_OPTIONS}
    base = _build(rest, model, theirs)
    return _construct(wrapper, head, mine, model, base=base)


def _construct(cls: type[CAMMethod], name: str, options: dict, model: nn.Module, **extra) -> CAMMethod:
    unknown = set(options) - _own_options(cls)
    if unknown:
        raise JitterCamError(f"method {name!r} has no option {min(unknown)!r}")
    return cls(model, **extra, **options)

