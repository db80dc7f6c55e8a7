"""Methods from what a user writes: names (`all`, comma lists, `WRAPPER:BASE`) and per-method options.

The one front end of `explain`, `compare` and the benchmark. A run's options reach its methods in two ways:

- `shared`: options for every method that takes them (`batch_size`, `seed`, `progress`, `size`, ...);
- `method_options`: `{TARGET: {NAME: value}}`, as `METHOD.NAME=VALUE` strings give them
  (`parse_method_options`), where TARGET is `'*'` (every method that takes NAME), a wrapper's name
  (`jittercam`: every `jittercam:BASE`) or a full name (`jittercam:gradcam++`); later ones win, in that order.

The timing, thread and machine helpers the same front ends share are in `jittercam.runtime`.
"""
from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from .errors import JitterCamError
from .methods import CAMMethod, create, method_class, method_options
from .methods.registry import method_list

MethodOptions = Mapping[str, Mapping[str, Any]]
# what `check_applies` says an option applies to
_APPLIES = {
    "size": "jittercam and upscale methods only",
    "target_layer": "methods that take a layer's maps (gradcam, jittercam, ...)",
    "compile": "methods with a compiled path (the gradient CAMs, jittercam and upscale over them, scorecam, "
               "ablationcam, rise)",
}
# the words a yes/no method option accepts, as `METHOD.NAME=VALUE` writes them (any case)
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def method_names(specs: str | Sequence[str], option: str = "methods") -> list[str]:
    """Checked method names from comma-separated `specs`, once or repeated; `'all'` is every registered
    method and wrapper with its default options; duplicates dropped, order kept.

    Args:
        specs: `'gradcam,jittercam'`, or a list of such strings.
        option: the parameter the names came from, for the error.

    Raises:
        JitterCamError: an unknown name, or no name at all.
    """
    return method_list([specs] if isinstance(specs, str) else list(specs), option)


def parse_method_options(specs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """`METHOD.NAME=VALUE` strings as `{METHOD: {NAME: value}}`; VALUE is a Python literal, else a string.
    `build_methods` then converts each value to its option's type (`relu=false` is False).

    Args:
        specs: the strings, e.g. `["rise.masks=1000", "hirescam.relu=false"]`.

    Returns:
        The overrides, `{TARGET: {NAME: value}}`.

    Raises:
        JitterCamError: a string that is not `METHOD.NAME=VALUE` (`option="method_options"`).
    """
    options: dict[str, dict[str, Any]] = {}
    for spec in specs:
        target, dot, rest = spec.partition(".")
        name, equals, text = rest.partition("=")
        if not (dot and equals and target and name):
            raise JitterCamError(f"method_options {spec!r} is not METHOD.NAME=VALUE (e.g. rise.masks=1000)",
                                 option="method_options")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        options.setdefault(target, {})[name.strip()] = value
    return options


def takes(name: str, option: str) -> bool:
    """Whether `create(name, ...)` uses `option`: `target_layer` only where the innermost method reads a
    layer's activations (`rise` does not), `compile` where the innermost method has a compiled path, any other
    option where a part of `name` accepts it."""
    if option == "target_layer":
        return bool(getattr(method_class(name.split(":")[-1]), "uses_layer", True))
    if option == "compile":  # every method takes the argument; only some have a compiled path
        return bool(getattr(method_class(name.split(":")[-1]), "compiles", False))
    return option in method_options(name)


def check_applies(names: Sequence[str], **options: Any) -> None:
    """Refuse an option that is given (not None) when none of the methods `names` takes it.

    Raises:
        JitterCamError: `size applies to jittercam and upscale methods only`, with `option=` its name.
    """
    for option, value in options.items():
        if value is not None and not any(takes(name, option) for name in names):
            applies = _APPLIES.get(option, f"other methods than {', '.join(names)}")
            raise JitterCamError(f"{option} applies to {applies}", option=option)


def check_method_options(overrides: MethodOptions, names: Sequence[str]) -> None:
    """Refuse overrides for a method that is not run, or of an option the method does not have.

    Args:
        overrides: `{TARGET: {NAME: value}}` (see the module's docstring).
        names: the methods run.

    Raises:
        JitterCamError: with `option="method_options"`.
    """
    for target, options in overrides.items():
        if target == "*":
            continue
        if target not in names and not any(name.split(":")[0] == target for name in names):
            first = next(iter(options))
            raise JitterCamError(f"method_options {target}.{first}: {target} is not among the methods run "
                                 f"({', '.join(names)})", option="method_options")
        for option in options:
            if option not in method_options(target):
                raise JitterCamError(f"method_options {target}.{option}: method {target!r} has no option "
                                     f"{option!r}", option="method_options")


def options_for(name: str, shared: Mapping[str, Any] | None = None,
                overrides: MethodOptions | None = None) -> dict[str, Any]:
    """The options method `name` is built with: the `shared` ones it takes (`batch_size` always, None
    letting the method choose; other None values left out), then the overrides it takes: `'*'` first,
    then its wrapper's name, then its full name.

    Args:
        name: a method name (`gradcam`, `jittercam:gradcam++`).
        shared: options for every method that takes them.
        overrides: `{TARGET: {NAME: value}}` (see the module's docstring).
    """
    shared = {"batch_size": None, **(shared or {})}
    options = {key: value for key, value in shared.items()
               if key == "batch_size" or (value is not None and takes(name, key))}
    accepted = method_options(name)
    for target in ("*", name.split(":")[0], name):
        for key, value in (overrides or {}).get(target, {}).items():
            if key in accepted:
                options[key] = converted(name, key, value, f"{target}.{key}")
    return options


def _parameter(name: str, option: str) -> inspect.Parameter | None:
    """The constructor parameter `option` of method `name` (the outermost part of `WRAPPER:BASE` that has
    it, following `**kwargs` up to the parents' constructors), or None."""
    parts = name.split(":")
    for start in range(len(parts)):
        for klass in method_class(":".join(parts[start:])).__mro__:
            init = vars(klass).get("__init__")
            if init is None:
                continue
            parameters = inspect.signature(init).parameters
            if option in parameters and parameters[option].kind is not inspect.Parameter.VAR_KEYWORD:
                return parameters[option]
            if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
                break
    return None


def _kinds(parameter: inspect.Parameter) -> set[str]:
    """The simple types (`bool`, `int`, `float`, `None`) a parameter's annotation names, else its default's."""
    annotation = parameter.annotation
    if isinstance(annotation, type):
        annotation = annotation.__name__
    if isinstance(annotation, str) and annotation:
        kinds = {part.strip() for part in annotation.split("|")}
    elif parameter.default is not inspect.Parameter.empty and parameter.default is not None:
        kinds = {type(parameter.default).__name__}
    else:
        return set()
    return kinds & {"bool", "int", "float", "None"}


def converted(name: str, option: str, value: Any, spelled: str | None = None) -> Any:
    """`value` of method `name`'s option `option` as its constructor's annotation (or default) types it:
    a yes/no option takes a bool or `true/false/yes/no/1/0` (any case), a whole-number option an int or
    its digits, a number option a number or its text; `none` where None is allowed; other options, and
    options without a simple type, are left as they are for the method to check.

    Args:
        name: a method name (`hirescam`, `jittercam:gradcam`).
        option: the option's name (`relu`).
        value: what the user gave (a string from the command line, or a Python value).
        spelled: how the error names the option (`hirescam.relu`); `option` by default.

    Returns:
        The converted value.

    Raises:
        JitterCamError: a value that is not of the option's type (`option="method_options"`).
    """
    parameter = _parameter(name, option)
    kinds = _kinds(parameter) if parameter is not None else set()
    if not kinds - {"None"}:
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if "None" in kinds and (value is None or text == "none"):
        return None
    if "bool" in kinds:
        if isinstance(value, bool):
            return value
        if text in _TRUE or (type(value) is int and value == 1):
            return True
        if text in _FALSE or (type(value) is int and value == 0):
            return False
        wanted = "one of " + "/".join(_TRUE + _FALSE) + " (any case)"
    elif "int" in kinds and "float" not in kinds:
        if type(value) is int:
            return value
        if text is not None and text.lstrip("+-").isdigit():
            return int(text)
        wanted = "a whole number"
    else:  # float, or int | float
        if type(value) in (int, float):
            return value if "int" in kinds and type(value) is int else float(value)
        try:
            number = float(text) if text is not None else None
        except ValueError:
            number = None
        if number is not None:
            return number
        wanted = "a number"
    raise JitterCamError(f"method_options {spelled or option}={value!r}: {option} must be {wanted}",
                         option="method_options")


def build_methods(names: Sequence[str], model: nn.Module, shared: Mapping[str, Any] | None = None,
                  overrides: MethodOptions | None = None) -> dict[str, CAMMethod]:
    """Build each method for `model` with `options_for(name, shared, overrides)`.

    Returns:
        `{name: method}` in the order of `names`.

    Raises:
        JitterCamError: an unknown name, a bad option value, a model the method cannot explain.
    """
    check_method_options(overrides or {}, names)
    return {name: _build(name, model, shared, overrides or {}) for name in names}


def _build(name: str, model: nn.Module, shared: Mapping[str, Any] | None, overrides: MethodOptions) -> CAMMethod:
    """`create(name, ...)`, its refusal of an option given as `METHOD.NAME=VALUE` named so (with
    `option="method_options"`): `method_options polycam.variant='x': variant must be ...`."""
    options = options_for(name, shared, overrides)
    try:
        return create(name, model, **options)
    except JitterCamError as error:
        given = [target for target in ("*", name.split(":")[0], name) if error.option in overrides.get(target, {})]
        if not given or error.option is None:
            raise
        spelled = f"{given[-1]}.{error.option}={overrides[given[-1]][error.option]!r}"
        raise JitterCamError(f"method_options {spelled}: {error}", option="method_options") from None


def describe(method: CAMMethod) -> dict[str, Any]:
    """A method and its options as JSON-able data, without what does not change a map (batch size,
    progress bars, compilation); wrapped methods nested."""
    described: dict[str, Any] = {"class": type(method).__name__}
    for key, value in method.options().items():
        if key in ("batch_size", "progress", "compile"):
            continue
        described[key] = describe(value) if isinstance(value, CAMMethod) else value
    return described
