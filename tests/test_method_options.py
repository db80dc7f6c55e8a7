"""Method options as a user gives them: `--option METHOD.NAME=VALUE` words converted by the option's type,
a wrong value refused in one line that names the option as it was given (never a `--flag` that does not
exist), and the library's methods refusing a non-bool for a yes/no option."""
from __future__ import annotations

import pytest

from conftest import GOLDFISH
from jittercam import frontend
from jittercam.cli import main
from jittercam.cli.common import in_cli_words
from jittercam.errors import JitterCamError
from jittercam.methods import create


def _built(tiny, name: str, *specs: str):
    return frontend.build_methods([name], tiny, overrides=frontend.parse_method_options(specs))[name]


@pytest.mark.parametrize("word, expected", [("false", False), ("False", False), ("NO", False), ("0", False),
                                            ("true", True), ("Yes", True), ("1", True), ("TRUE", True)])
def test_a_yes_no_option_takes_its_words_in_any_case(tiny, word, expected):
    assert _built(tiny, "hirescam", f"hirescam.relu={word}").relu is expected
    assert frontend.converted("hirescam", "relu", expected) is expected  # a Python bool from the library too


def test_numbers_are_converted_by_the_options_type(tiny):
    assert _built(tiny, "gradcam++", "gradcam++.epsilon=1e-3").epsilon == pytest.approx(1e-3)
    assert isinstance(_built(tiny, "gradcam++", "gradcam++.epsilon=0").epsilon, float)
    jitter = _built(tiny, "jittercam:gradcam", "jittercam.count_start=1", "jittercam.size=none")
    assert jitter.count_start == 1 and jitter.options()["count_start"] == 1
    assert frontend.converted("polycam", "variant", "-") == "-"  # a string option: left to the method
    assert frontend.converted("cameras", "sizes", [224, 448]) == [224, 448]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("hirescam.relu=maybe", "method_options hirescam.relu='maybe': relu must be one of true/yes/1/false/no/0"),
        ("hirescam.relu=2", "method_options hirescam.relu=2: relu must be one of"),
        ("jittercam.count_start=x", "method_options jittercam.count_start='x': count_start must be a whole number"),
        ("*.count_start=1.5", "method_options *.count_start=1.5: count_start must be a whole number"),
        ("gradcam++.epsilon=abc", "method_options gradcam++.epsilon='abc': epsilon must be a number"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_in_one_line(tiny, spec, message):
    name = {"jittercam": "jittercam:gradcam", "*": "jittercam"}.get(spec.split(".")[0], spec.split(".")[0])
    with pytest.raises(JitterCamError) as caught:
        _built(tiny, name, spec)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert caught.value.option == "method_options"
    assert in_cli_words(caught.value).startswith("--option " + message.removeprefix("method_options "))


@pytest.mark.parametrize("name, option", [("hirescam", "relu"), ("rise", "progress"), ("scorecam", "progress"),
                                          ("ablationcam", "progress"), ("cameras", "same_top1"),
                                          ("polycam", "lnorm")])
def test_the_library_refuses_a_string_for_a_yes_no_option(tiny, name, option):
    with pytest.raises(JitterCamError, match=rf"^{option} must be True or False, not 'false'$") as caught:
        create(name, tiny, **{option: "false"})
    assert caught.value.option == option


@pytest.mark.parametrize("value", ["x", -1, True, float("nan")])
def test_jittercam_refuses_a_count_start_that_is_not_a_number_at_least_0(tiny, value):
    with pytest.raises(JitterCamError, match=r"^count_start must be a number at least 0") as caught:
        create("jittercam", tiny, count_start=value)
    assert caught.value.option == "count_start"


@pytest.mark.parametrize(
    "args, error",
    [
        (["--method", "polycam", "--option", "polycam.variant=bad"],
         "jittercam: error: --option polycam.variant='bad': variant must be one of '+', '-', '±', not 'bad'\n"),
        (["--method", "jittercam", "--option", "jittercam.count_start=x"],
         "jittercam: error: --option jittercam.count_start='x': count_start must be a whole number\n"),
        (["--method", "hirescam", "--option", "hirescam.relu=nope"],
         "jittercam: error: --option hirescam.relu='nope': relu must be one of true/yes/1/false/no/0 (any case)\n"),
        (["--method", "gradcam", "--batch-size", "0"], "jittercam: error: --batch-size must be at least 1\n"),
    ],
)
def test_the_command_line_names_a_method_option_as_it_was_given(tmp_path, capsys, args, error):
    out = tmp_path / "out"
    assert main(["explain", str(GOLDFISH), *args, "--out", str(out), "--weights", "random", "--quiet"]) == 2
    assert capsys.readouterr().err == error
    assert not out.exists()


def test_a_method_error_without_a_flag_keeps_the_parameters_name():
    error = JitterCamError("variant must be one of 'paper', not 'x'", option="variant")
    assert in_cli_words(error, known={"batch_size": "--batch-size"}) == "variant must be one of 'paper', not 'x'"
    batch = JitterCamError("batch_size must be at least 1", option="batch_size")
    assert in_cli_words(batch, known={"batch_size": "--batch-size"}) == "--batch-size must be at least 1"
