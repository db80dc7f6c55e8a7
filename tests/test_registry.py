"""Names → methods: plain names, wrappers (`jittercam:BASE`), nesting, options routed, errors."""
from __future__ import annotations

import re

import pytest
import torch

import jittercam
from jittercam import GradCAM, GradCAMPlusPlus, JitterCAM, JitterCamError
from jittercam.methods import CAMMethod, check_method_name, method_class, method_options, registry


def test_wrappers_take_a_default_base_and_any_layer_method(tiny):
    plain = jittercam.create("jittercam", tiny, input_size=32)
    assert isinstance(plain, JitterCAM) and isinstance(plain.base, GradCAM)
    plus = jittercam.create("jittercam:gradcam++", tiny, input_size=32)
    assert isinstance(plus.base, GradCAMPlusPlus)
    assert method_class("jittercam:gradcam++") is JitterCAM and method_class("gradcam") is GradCAM


def test_options_go_to_the_wrapper_or_the_base(tiny):
    method = jittercam.create(
        "jittercam:gradcam++", tiny, input_size=32, size=10, epsilon=1e-6, batch_size=3, target_layer="conv"
    )
    assert (method.size, method.batch_size) == (10, 3)
    assert method.base.epsilon == 1e-6 and method.base.batch_size == 3 and method.layer.name == "conv"
    assert {"size", "epsilon", "target_layer", "interpolation"} <= method_options("jittercam:gradcam++")
    assert "size" not in method_options("gradcam")


def test_unknown_names_and_options_are_one_clear_error(tiny):
    with pytest.raises(JitterCamError, match=re.escape("unknown method 'gradcam+';")):
        jittercam.create("gradcam+", tiny)
    with pytest.raises(JitterCamError, match="unknown method 'nope'"):
        check_method_name("jittercam:nope")
    with pytest.raises(JitterCamError, match="unknown method 'wrap'"):
        check_method_name("wrap:gradcam")
    with pytest.raises(JitterCamError, match="has no option 'size'"):
        jittercam.create("gradcam", tiny, input_size=32, size=14)


def test_repr_shows_the_options(tiny):
    method = jittercam.create("jittercam:gradcam++", tiny, input_size=32, size=12)
    text = repr(method)
    assert text.startswith("JitterCAM(base=GradCAMPlusPlus(target_layer='act'")
    assert "epsilon=0.0" in text and "size=12" in text and "count_start=0" in text


def test_passes_follow_table_5(tiny, lite0):
    assert GradCAM(tiny, input_size=32).passes() == 1
    assert JitterCAM(tiny, input_size=32).passes() == 81  # m = 8, size 16: d = 8, (8 + 1)^2
    assert JitterCAM(lite0).passes() == 64  # m = 7, size 14: (7 + 1)^2
    assert JitterCAM(lite0, size=9).passes() == 9
    assert JitterCAM(lite0, size=7).passes(160) == 9  # at 160 px m = 5: size 7 needs (2 + 1)^2


def test_a_new_method_registers_in_one_place(tiny):
    @registry.register_method("test-ones")
    class Ones(CAMMethod):
        def _explain(self, images, target):
            return torch.ones(images.shape[0], 2, 2, device=images.device)

    try:
        assert "test-ones" in jittercam.available_methods()
        assert "jittercam:test-ones" in jittercam.available_methods()
        ones = jittercam.create("test-ones", tiny, input_size=32)
        assert torch.equal(ones(torch.rand(1, 3, 32, 32)), torch.ones(1, 2, 2))
        with pytest.raises(ValueError):
            registry.register_method("test-ones")(Ones)
    finally:
        registry._METHODS.pop("test-ones")


def test_a_wrapper_refuses_a_base_without_a_layer_map(tiny):
    @registry.register_method("test-pixels")
    class Pixels(CAMMethod):
        uses_layer = layer_map = False

        def _explain(self, images, target):
            return images[:, 0]

    try:
        assert "jittercam:test-pixels" not in jittercam.available_methods()
        with pytest.raises(JitterCamError, match="target layer's resolution"):
            check_method_name("jittercam:test-pixels")
        with pytest.raises(JitterCamError, match="does not use a target layer"):
            jittercam.create("test-pixels", tiny, target_layer="conv")
    finally:
        registry._METHODS.pop("test-pixels")


def test_only_wrapper_and_base_combinations_that_mean_something_are_listed_and_built():
    names = jittercam.available_methods()
    # guided weighs Guided Backprop by a class map: of a layer, at any resolution; never its own output
    for refused in ("guided:centre", "guided:random", "guided:constant", "guided:rise", "guided:guidedbackprop",
                    "jittercam:rise", "upscale:cameras", "jittercam:centre"):
        assert refused not in names
        with pytest.raises(JitterCamError, match=f"^method '{re.escape(refused)}': "):
            check_method_name(refused)
    for meant in ("guided:gradcam", "guided:cameras", "guided:scorecam", "jittercam:scorecam", "upscale:layercam"):
        assert meant in names
        check_method_name(meant)
    check_method_name("guided:jittercam:gradcam")  # nested wrappers: accepted, not listed
    with pytest.raises(JitterCamError, match="guided cannot wrap guided: it does not wrap itself"):
        check_method_name("guided:guided:gradcam")
    layer_methods = sorted(n for n in jittercam.available_methods() if ":" not in n and method_class(n).uses_layer
                           and n not in registry._WRAPPERS)
    assert registry.bases("guided") == layer_methods  # every method that reads a layer, at any resolution
    assert {"ablationcam", "cameras", "gradcam", "gradcam++", "hirescam", "layercam", "scorecam"} <= set(layer_methods)
    assert registry.bases("jittercam") == [n for n in layer_methods if method_class(n).layer_map]
    assert "cameras" not in registry.bases("jittercam")


def test_a_refused_combination_says_why_and_what_the_wrapper_takes():
    with pytest.raises(JitterCamError) as caught:
        check_method_name("guided:rise")
    assert str(caught.value) == (
        "method 'guided:rise': guided cannot wrap rise: it needs a class activation map of a layer, and rise "
        f"reads no layer's activations; its bases: {', '.join(registry.bases('guided'))} (and jittercam, upscale "
        "over them)")
    with pytest.raises(JitterCamError) as caught:
        check_method_name("rise:gradcam")
    assert str(caught.value) == ("method 'rise:gradcam': rise takes no base; only the wrappers do (guided:BASE, "
                                 "jittercam:BASE, upscale:BASE; `jittercam list` shows their bases)")
