"""The one front end of explain, compare and bench: methods from names and options, timing, errors in
library words with the CLI's flags added."""
from __future__ import annotations

import pickle

import pytest
import torch

from jittercam import frontend, runtime
from jittercam.cli.common import in_cli_words
from jittercam.errors import JitterCamError
from jittercam.inputs import parse_device


def test_method_option_strings_are_parsed_as_literals_else_strings():
    parsed = frontend.parse_method_options(["rise.masks=1000", "*.batch_size=8", "jittercam.size=None",
                                            "cameras.sizes=[224, 448]", "rise.name=a b"])
    assert parsed == {"rise": {"masks": 1000, "name": "a b"}, "*": {"batch_size": 8},
                      "jittercam": {"size": None}, "cameras": {"sizes": [224, 448]}}
    with pytest.raises(JitterCamError, match=r"^method_options 'masks' is not METHOD.NAME=VALUE") as caught:
        frontend.parse_method_options(["masks"])
    assert caught.value.option == "method_options"


def test_overrides_go_star_then_wrapper_then_full_name_where_taken():
    overrides = {"*": {"seed": 1, "masks": 5}, "jittercam": {"size": 9}, "jittercam:gradcam++": {"size": 10}}
    assert frontend.options_for("rise", {"batch_size": 2}, overrides) == {"batch_size": 2, "seed": 1, "masks": 5}
    assert frontend.options_for("jittercam:gradcam++", {}, overrides) == {"batch_size": None, "size": 10}
    assert frontend.options_for("jittercam", {}, overrides) == {"batch_size": None, "size": 9}
    # shared options reach the methods that take them; None means the method's default
    assert frontend.options_for("gradcam", {"size": 9, "progress": True, "precision": None}) == {"batch_size": None}
    assert frontend.options_for("rise", {"target_layer": "layer4"}) == {"batch_size": None}
    assert frontend.options_for("gradcam", {"target_layer": "layer4"}) == {"batch_size": None,
                                                                           "target_layer": "layer4"}


@pytest.mark.parametrize("overrides, message", [
    ({"rise": {"masks": 3}}, "method_options rise.masks: rise is not among the methods run (gradcam)"),
    ({"gradcam": {"mask": 3}}, "method_options gradcam.mask: method 'gradcam' has no option 'mask'"),
])
def test_overrides_for_other_methods_or_options_are_refused(overrides, message):
    with pytest.raises(JitterCamError) as caught:
        frontend.check_method_options(overrides, ["gradcam"])
    assert str(caught.value) == message and caught.value.option == "method_options"
    frontend.check_method_options({"*": {"anything": 1}}, ["gradcam"])


def test_options_that_no_method_takes_are_refused():
    frontend.check_applies(["gradcam", "jittercam"], size=9, target_layer="layer4")
    with pytest.raises(JitterCamError, match=r"^size applies to jittercam and upscale methods only$"):
        frontend.check_applies(["gradcam"], size=9)
    with pytest.raises(JitterCamError, match=r"^target_layer applies to methods that take"):
        frontend.check_applies(["rise", "centre"], target_layer="layer4")
    frontend.check_applies(["gradcam"], size=None)


def test_build_methods_in_order_with_their_options(tiny):
    methods = frontend.build_methods(["jittercam:gradcam", "rise"], tiny,
                                     {"batch_size": 2, "seed": 3, "input_size": 32},
                                     {"rise": {"masks": 16}, "jittercam": {"size": 9}})
    assert list(methods) == ["jittercam:gradcam", "rise"]
    assert methods["rise"].options()["masks"] == 16 and methods["rise"].options()["seed"] == 3
    described = frontend.describe(methods["jittercam:gradcam"])
    assert described["class"] == "JitterCAM" and described["size"] == 9 and "batch_size" not in described
    assert described["base"]["class"] == "GradCAM"
    assert frontend.method_names("gradcam, jittercam,gradcam") == ["gradcam", "jittercam"]


def test_timed_returns_the_result_and_the_seconds():
    result, seconds = runtime.timed(lambda: 42, torch.device("cpu"))
    assert result == 42 and 0 <= seconds < 1
    described = runtime.machine("cpu")
    assert described.gpu is None and str(described).endswith(f"torch {torch.__version__}")
    assert 1 <= runtime.usable_cpus() <= runtime.allowed_cpus()
    one = runtime.Machine("AMD EPYC", 2, 2, 1, None, "2.14.1")
    assert str(one) == "AMD EPYC, 2 cores, 1 torch thread, torch 2.14.1"
    unknown = runtime.Machine("x", None, 1, 4, "H200", "2.11")
    assert str(unknown) == "x, cores unknown, 4 torch threads, H200, torch 2.11"


def test_library_errors_name_the_parameter_and_the_cli_its_flag():
    with pytest.raises(JitterCamError) as caught:
        parse_device("nosuchdevice")
    assert str(caught.value).startswith("device 'nosuchdevice' is not a torch device")
    assert in_cli_words(caught.value).startswith("--device 'nosuchdevice' is not a torch device")
    error = JitterCamError("out of memory on cpu; try a smaller batch_size (0 of 2 maps written to out)",
                           option="batch_size")
    assert in_cli_words(error) == "out of memory on cpu; try a smaller --batch-size (0 of 2 maps written to out)"
    assert in_cli_words(JitterCamError("methods names no method", option="methods"),
                        {"methods": "--method"}) == "--method names no method"
    assert in_cli_words(JitterCamError("method_options 'x' is bad", option="method_options")) == "--option 'x' is bad"
    assert in_cli_words(JitterCamError("no option here")) == "no option here"
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is JitterCamError and str(copy) == str(error) and copy.option == "batch_size"
