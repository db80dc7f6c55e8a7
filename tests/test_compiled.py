"""The compiled path (`compile=`, `jittercam.compiled`): maps equal to eager ones, one compilation per shape,
the model untouched, CUDA graphs falling back off CUDA.

Most tests run torch.compile with the "aot_eager" backend (dynamo's tracing, AOTAutograd's graphs, no C++
compiler: the bookkeeping, the cut and the padding are the same), one with inductor's C++ backend itself.
Tolerance: compiled fp32 maps within 1e-5 of the largest eager value (inductor reorders reductions; measured
2e-6 on ResNet18), deletion/insertion curves within 1e-5."""
from __future__ import annotations

import copy
import gc
import logging
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

import jittercam
from conftest import TinyCNN
from jittercam import compiled, metrics
from jittercam.cli import main
from jittercam.errors import JitterCamError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"

TOLERANCE = 1e-5


class SkipNet(nn.Module):
    """conv -> ReLU -> target conv (+ the first activation, a skip around the target) -> pool -> linear:
    a head that reads more than the target layer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, kernel_size=4, stride=4)
        self.act = nn.ReLU()
        self.block = nn.Conv2d(6, 6, kernel_size=3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.act(self.stem(x))
        return self.fc(self.pool(self.block(skip) + skip).flatten(1))


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")


def _model(cls=TinyCNN, **options) -> nn.Module:
    torch.manual_seed(0)
    return cls(**options).eval()


def _images(count: int = 3, pixels: int = 32) -> torch.Tensor:
    return torch.randn(count, 3, pixels, pixels, generator=torch.Generator().manual_seed(1))


def _close(compiled_maps: torch.Tensor, eager_maps: torch.Tensor) -> None:
    assert compiled_maps.shape == eager_maps.shape
    scale = float(eager_maps.abs().max())
    assert scale > 0
    assert float((compiled_maps - eager_maps).abs().max()) <= TOLERANCE * scale


def _state(model: nn.Module) -> dict:
    return {
        "training": model.training,
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "values": copy.deepcopy(model.state_dict()),
        "modules": [type(m) for m in model.modules()],
    }


def test_split_cuts_after_the_layer_and_keeps_what_crosses():
    model = _model(SkipNet)
    trunk, head = compiled.split(model, model.block)
    x = _images()
    with torch.no_grad():
        cut = trunk(x)
        assert len(cut) == 2  # the layer's output and the skip around it
        assert torch.equal(cut[0], model.block(model.act(model.stem(x))))
        assert torch.allclose(head(*cut), model(x))
    assert trunk.block is model.block  # the model's own modules, not copies


def test_trace_refuses_a_model_fx_cannot_trace():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 4, stride=4)

        def forward(self, x):
            y = self.conv(x)
            return y.mean((2, 3)) if y.sum() > 0 else -y.mean((2, 3))  # data-dependent control flow

    model = Branchy().eval()
    with pytest.raises(JitterCamError, match=r"torch\.fx can trace"):
        compiled.split(model, model.conv)
    with pytest.raises(JitterCamError, match=r"torch\.fx can trace") as error:  # at construction
        jittercam.create("gradcam", model, target_layer="conv", input_size=32, compile=True)
    assert error.value.option == "compile"


def test_an_untraceable_model_still_compiles_whole_for_the_metrics(aot_eager):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 4, stride=4)

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return y if bool(y.sum() > 0) else -y

    torch.manual_seed(0)
    model, x, saliency = Branchy().eval(), _images(), torch.rand(3, 8, 8)
    fast = metrics.deletion(model, x, saliency, step=128, batch_size=4, compile=True)
    assert torch.allclose(fast, metrics.deletion(model, x, saliency, step=128, batch_size=4), atol=TOLERANCE)


@pytest.mark.parametrize("value, expected", [(False, None), (None, None), (True, "auto"), ("default", "default")])
def test_check_compile(value, expected):
    assert compiled.check_compile(value) == expected


def test_bad_compile_values_and_methods_without_a_compiled_path_are_refused():
    model = _model()
    with pytest.raises(JitterCamError, match="compile must be True, False or one of") as error:
        jittercam.create("gradcam", model, input_size=32, compile="fast")
    assert error.value.option == "compile"
    with pytest.raises(JitterCamError, match="GuidedBackprop has no compiled path"):
        jittercam.create("guidedbackprop", model, compile=True)
    with pytest.raises(JitterCamError, match="compile must be"):
        metrics.deletion(model, _images(), torch.rand(3, 8, 8), compile="yes")


def test_cuda_graphs_fall_back_off_cuda():
    cpu = torch.device("cpu")
    assert compiled.resolve_mode("reduce-overhead", cpu, True) == "default"
    assert compiled.resolve_mode("auto", cpu, True) == "default"
    assert compiled.resolve_mode("auto", torch.device("cuda"), True) == "reduce-overhead"
    assert compiled.resolve_mode("auto", torch.device("cuda"), False) == "default"
    assert compiled.resolve_mode("max-autotune", cpu, False) == "max-autotune"


def test_cuda_graph_mode_on_cpu_gives_eager_maps(aot_eager):
    model = _model()
    x = _images()
    eager = jittercam.create("gradcam", model, input_size=32, batch_size=4)(x, [0, 1, 2])
    graphs = jittercam.create("gradcam", model, input_size=32, batch_size=4, compile="reduce-overhead")
    _close(graphs(x, [0, 1, 2]), eager)


def test_padding_rule():
    assert compiled.padded_rows(1, 64) == 1  # one image keeps its shape: the latency case
    assert compiled.padded_rows(3, 4) == 4
    assert compiled.padded_rows(4, 4) == 4
    x = _images(2).contiguous(memory_format=torch.channels_last)
    padded = compiled.pad(x, 4)
    assert padded.shape[0] == 4 and padded.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(padded[2], x[0]) and torch.equal(padded[:2], x)


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "xgradcam", "jittercam", "upscale", "scorecam",
                                  "ablationcam", "rise"])
def test_compiled_maps_equal_eager_maps(aot_eager, name):
    model = _model(SkipNet) if name == "ablationcam" else _model()
    options: dict = {"batch_size": 4}
    if name == "rise":
        options.update(masks=24)
    else:
        options["input_size"] = 32
    if name in ("jittercam", "upscale"):
        options["size"] = 10  # m = 8 at 32 px: 9 patches
    x, target = _images(), torch.tensor([0, 3, 1])
    eager = jittercam.create(name, model, **options)(x, target)
    before = _state(model)
    method = jittercam.create(name, model, compile=True, **options)
    _close(method(x, target), eager)
    _close(method(x, None), jittercam.create(name, model, **options)(x, None))
    after = _state(model)
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    assert after["requires_grad"] == before["requires_grad"] and after["grads"] == before["grads"]
    assert after["modules"] == before["modules"]
    assert all(torch.equal(after["values"][key], value) for key, value in before["values"].items())


@pytest.mark.parametrize("closed_form", [True, False])
def test_ablation_head_reruns_and_closed_form_compiled(aot_eager, closed_form):
    for cls in (TinyCNN, SkipNet):  # the head reads the layer alone; the head also reads a skip
        model = _model(cls)
        x = _images()
        eager = jittercam.create("ablationcam", model, input_size=32, closed_form=closed_form)(x, [0, 1, 2])
        method = jittercam.create("ablationcam", model, input_size=32, closed_form=closed_form, compile=True)
        _close(method(x, [0, 1, 2]), eager)


def test_second_call_and_a_ragged_last_chunk_do_not_recompile(aot_eager):
    model = _model()
    method = jittercam.create("jittercam", model, input_size=32, batch_size=4, size=10, compile=True)
    x = _images(2)
    method(x, [0, 1])  # 2 · 9 patches: chunks of 4, 4, 4, 4, 2 (padded to 4)
    compiled_pieces = compiled.cached_entries(model)
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        method(x, [2, 3])
        method(_images(3), [0, 1, 2])  # 27 patches: a ragged chunk of 3
        gradcam = jittercam.create("gradcam", model, input_size=32, batch_size=4, compile=True)
        gradcam(_images(3), [0, 1, 2])  # padded to 4: the pieces Jitter-CAM's base compiled
    assert counters["stats"]["unique_graphs"] == graphs
    assert compiled.cached_entries(model) == compiled_pieces


def test_deletion_insertion_compiled_and_not_recompiled(aot_eager):
    model = _model()
    x, saliency = _images(), torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    eager = metrics.deletion_insertion(model, x, saliency, step=96, batch_size=4)
    fast = metrics.deletion_insertion(model, x, saliency, step=96, batch_size=4, compile=True)
    for a, b in ((fast.deletion, eager.deletion), (fast.insertion, eager.insertion)):
        assert torch.equal(a.target, b.target)
        assert torch.allclose(a.scores, b.scores, atol=TOLERANCE)
    graphs = counters["stats"]["unique_graphs"]
    with torch._dynamo.config.patch(error_on_recompile=True):
        # 3 images · 2 games · 12 points = 72 passes in chunks of 4; 1 image: 24 = 6 chunks; 5: 120
        metrics.deletion(model, x[:1], saliency[:1], step=96, batch_size=4, compile=True)
        metrics.insertion(model, _images(5), torch.rand(5, 8, 8), step=96, batch_size=4, compile=True)
    assert counters["stats"]["unique_graphs"] == graphs


def test_the_cache_lets_the_model_go(aot_eager):
    model = _model()
    jittercam.create("gradcam", model, input_size=32, batch_size=4, compile=True)(_images(), [0, 1, 2])
    assert compiled.cached_entries(model) > 0
    reference = weakref.ref(model)
    del model
    gc.collect()
    assert reference() is None


def test_inductor_cpp_maps_equal_eager_maps():
    """The real thing: inductor's C++ backend on the CPU (gcc), Grad-CAM's trunk and head and the full
    forward of deletion/insertion."""
    model = _model(TinyCNN, channels=4)
    x = _images()
    eager = jittercam.create("gradcam", model, input_size=32, batch_size=4)(x, [0, 3, 1])
    method = jittercam.create("gradcam", model, input_size=32, batch_size=4, compile=True)
    _close(method(x, [0, 3, 1]), eager)
    saliency = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    fast = metrics.deletion(model, x, saliency, step=128, batch_size=4, compile=True)
    assert torch.allclose(fast, metrics.deletion(model, x, saliency, step=128, batch_size=4), atol=TOLERANCE)


def test_explain_compile_flag_refused_for_methods_without_a_compiled_path(tmp_path, capsys):
    image = sorted(EXAMPLES.glob("*.png"))[0]
    code = main(["explain", str(image), "--method", "guidedbackprop", "--compile", "--out", str(tmp_path),
                 "--weights", "random", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "--compile applies to methods with a compiled path" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_compiled_on_cuda_with_cuda_graphs():
    """On CUDA, compile=True runs the one-pass methods as CUDA graphs ("reduce-overhead"): one image, then a
    batch, equal to the eager maps; Ablation-CAM's closed form likewise; deletion compiled."""
    model = _model(SkipNet).cuda()
    x = _images().cuda()
    for name in ("gradcam", "ablationcam"):
        eager = jittercam.create(name, model, input_size=32, batch_size=4)
        fast = jittercam.create(name, model, input_size=32, batch_size=4, compile=True)
        for images, target in ((x[:1], [2]), (x, [0, 3, 1]), (x[:1], [4])):
            _close(fast(images, target), eager(images, target))
    saliency = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)).cuda()
    fast_auc = metrics.deletion(model, x, saliency, step=128, batch_size=4, compile=True)
    assert torch.allclose(fast_auc, metrics.deletion(model, x, saliency, step=128, batch_size=4), atol=TOLERANCE)


def test_bench_compile_flag_reaches_the_methods_that_have_a_compiled_path():
    from jittercam.bench import runner
    from jittercam.bench.cli import settings_from
    from jittercam.cli import parser

    args = parser().parse_args(["bench", "pointing", "--dataset", "offline", "--compile", "--db",
                                      "x.db", "--methods", "gradcam,guidedbackprop"])
    settings = settings_from(args)
    assert settings.compile is True
    assert runner._options_for("gradcam", settings)["compile"] is True
    assert "compile" not in runner._options_for("guidedbackprop", settings)
    assert "compile" not in runner._options_for("gradcam", runner.Settings("pointing", "offline", Path("x.db")))


def test_torchs_no_cuda_runtime_note_is_kept_out_of_a_cpu_compile():
    import jittercam.compiled  # noqa: F401 - installs the filter

    logger = logging.getLogger("torch.utils.cpp_extension")

    def record(message: str, *args) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, args, None)

    assert not logger.filter(record("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda"))
    assert logger.filter(record("Error building extension '%s'", "x"))
