"""The public API's docstrings in one style (Google's, as the API reference renders them): every public
function states its arguments and what it returns, every public class its constructor's arguments or its
attributes."""
from __future__ import annotations

import importlib
import inspect

import pytest

PUBLIC = ("jittercam", "jittercam.methods", "jittercam.metrics", "jittercam.data", "jittercam.models",
          "jittercam.bench", "jittercam.bench.experiments", "jittercam.sources.timm", "jittercam.sources.huggingface")


def _public() -> dict[str, object]:
    found: dict[str, object] = {}
    for module_name in PUBLIC:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj not in found.values():
                found[f"{module_name}.{name}"] = obj
    return found


def _parameters(obj) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    if target is object.__init__:
        return []
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin's signature
        return []
    return [name for name in parameters if name not in ("self", "cls")]


def _missing(obj) -> list[str]:
    doc = inspect.getdoc(obj) or ""
    missing = []
    if not doc.strip():
        return ["a docstring"]
    if _parameters(obj) and "Args:" not in doc and "Attributes:" not in doc:
        missing.append("Args:")
    if inspect.isfunction(obj) and inspect.signature(obj).return_annotation not in (None, "None") \
            and "Returns:" not in doc:
        missing.append("Returns:")
    return missing


def test_the_public_api_is_large_enough_to_mean_something():
    assert len(_public()) > 100


@pytest.mark.parametrize("name", sorted(_public()))
def test_public_docstring_states_arguments_and_returns(name):
    assert _missing(_public()[name]) == [], f"{name}'s docstring lacks {', '.join(_missing(_public()[name]))}"
