"""A benchmark run compiles its forward passes by itself where that pays (a long run on a CPU), stays eager
otherwise or when told (`--no-compile`) or when torch.compile cannot run; compiled or not, it stores the same
results, and the seconds it stores leave out the compiling. torch.compile runs with the "aot_eager" backend
here (no C++ compiler run: the bookkeeping is the same)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TinyCNN
from jittercam import compiled, models, runtime
from jittercam.bench import progress
from jittercam.bench.experiments import Arm
from jittercam.cli import main
from jittercam.methods import create
from jittercam.models import ModelCard, imagenet_categories, register_model

TOLERANCE = 1e-5


built: list[nn.Module] = []


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    @register_model("tiny-autocompile")
    def build(weights):
        torch.manual_seed(0)
        model = TinyCNN(8, 1000).eval()
        built.append(model)
        return model, ModelCard("tiny-autocompile", 32, (0.5,) * 3, (0.5,) * 3, imagenet_categories())

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    monkeypatch.setattr(compiled, "_problem", None)
    built.clear()
    yield
    for name in ("tiny-autocompile", "tiny-branchy"):
        models._BUILDERS.pop(name, None)


def bench(db: Path, *extra: str, methods: str = "gradcam,jittercam,centre", limit: int = 3) -> list[str]:
    return ["bench", "local-accuracy", "--dataset", "offline", "--model", "tiny-autocompile", "--methods", methods,
            "--batch-size", "4", "--limit", str(limit), "--db", str(db), *extra]


def _every_run_long(monkeypatch) -> None:
    """Every run long enough, and compiling free enough, to compile by itself."""
    monkeypatch.setattr(compiled, "AUTO_SECONDS", 0.0)
    monkeypatch.setattr(compiled, "PIECE_SECONDS", 0.0)


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT method, item, metric, value FROM results ORDER BY 1, 2, 3").fetchall()


def _same_results(a: Path, b: Path) -> None:
    left, right = _rows(a), _rows(b)
    assert len(left) == len(right) > 0
    for one, other in zip(left, right, strict=True):
        assert one[:3] == other[:3]
        assert one[3] == pytest.approx(other[3], abs=TOLERANCE)


def test_the_rule_compiles_long_cpu_runs_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not compiled.pays(cpu, compiled.AUTO_SECONDS - 1)
    assert compiled.pays(cpu, compiled.AUTO_SECONDS)
    assert not compiled.pays(cuda, 10 * compiled.AUTO_SECONDS)  # unmeasured on a GPU: --compile


def test_the_rule_weighs_the_pieces_to_compile():
    cpu = torch.device("cpu")
    many = 15
    assert compiled.pays(cpu, compiled.AUTO_SECONDS, 1)
    assert not compiled.pays(cpu, compiled.AUTO_SECONDS, many)  # 15 x 40 s of compiling to save 27 % of 10 min
    long_enough = many * compiled.PIECE_SECONDS / compiled.SAVED
    assert not compiled.pays(cpu, 0.99 * long_enough, many)
    assert compiled.pays(cpu, long_enough, many)
    chosen, line = compiled.choose(cpu, 1200, lambda: 0.5, ["upscale"], many)
    assert not chosen
    assert line == ("the forward passes of upscale take about 10 min eagerly, but compiling their 15 pieces (one "
                    "per target layer and input size) would take about 10 min, more than it saves; the run stays "
                    "eager (--compile compiles anyway)")
    assert compiled.choose(cpu, 100, lambda: 0.5, ["upscale"], many) == (False, None)  # short: nothing to say


def test_the_pieces_a_method_compiles():
    model = TinyCNN(8, 1000).eval()  # target layer "act": 8 x 8 at 32 px, stride 4
    gradcam = create("gradcam", model, input_size=32)
    assert gradcam.compiled_pieces(32) == {("act", 32)}
    assert create("jittercam", model, input_size=32).compiled_pieces(32) == {("act", 32)}  # patches of 32 px
    assert create("upscale", model, input_size=32).compiled_pieces(32) == {("act", 32 + 8 * 4)}  # d = m = 8
    assert create("upscale", model, size=10, input_size=32).compiled_pieces(32) == {("act", 32 + 2 * 4)}
    assert create("rise", model, masks=8).compiled_pieces(32) == {(None, 32)}  # the whole model
    assert create("guided", model, input_size=32).compiled_pieces(32) == set()  # no compiled path
    assert create("centre", model).compiled_pieces(32) == set()


def test_a_run_of_many_pieces_stays_eager_and_says_why(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(compiled, "AUTO_SECONDS", 0.0)
    monkeypatch.setattr(compiled, "PIECE_SECONDS", 1e9)
    arguments = ["bench", "size-sweep", "--dataset", "offline", "--model", "tiny-autocompile", "--methods",
                 "upscale", "--sizes", "8-10", "--limit", "1", "--db", str(tmp_path / "r.db")]
    assert main(arguments) == 0
    err = capsys.readouterr().err
    # sizes 8, 9, 10: the input at 32, 36 and 40 px, and the metrics' forward
    assert "but compiling their 4 pieces (one per target layer and input size)" in err, err
    assert "run compiled" not in err
    assert compiled.cached_entries(built[-1]) == 0


def test_a_short_run_stays_eager(tmp_path, capsys):
    assert main(bench(tmp_path / "r.db")) == 0
    assert "run compiled" not in capsys.readouterr().err
    assert compiled.cached_entries(built[-1]) == 0


def test_a_long_run_compiles_by_itself_and_stores_what_an_eager_run_stores(tmp_path, capsys, monkeypatch):
    _every_run_long(monkeypatch)
    assert main(bench(tmp_path / "auto.db")) == 0
    err = capsys.readouterr().err
    assert "the forward passes of gradcam, jittercam take about" in err, err  # the centre baseline has no passes
    assert "--no-compile runs eagerly" in err
    pieces = compiled.cached_entries(built[-1])
    assert pieces > 0  # the methods' trunk and head, deletion/insertion's forward
    assert main(bench(tmp_path / "eager.db", "--no-compile")) == 0
    assert "run compiled" not in capsys.readouterr().err
    assert compiled.cached_entries(built[-1]) == 0
    _same_results(tmp_path / "auto.db", tmp_path / "eager.db")


def test_a_run_stays_eager_where_torch_compile_does_not_run(tmp_path, capsys, monkeypatch):
    _every_run_long(monkeypatch)
    monkeypatch.setattr(compiled, "_problem", "CalledProcessError: no C++ compiler")
    assert main(bench(tmp_path / "r.db")) == 0
    err = capsys.readouterr().err
    assert "torch.compile does not run here (CalledProcessError: no C++ compiler); the run stays eager" in err
    assert compiled.cached_entries(built[-1]) == 0


def test_the_compiler_probe_says_why_in_one_line(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Compiler: cc not found\nlong trace")

    monkeypatch.setattr(torch, "compile", broken)
    assert compiled.problem() == "RuntimeError: Compiler: cc not found"
    monkeypatch.setattr(compiled, "_problem", None)
    monkeypatch.undo()
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    monkeypatch.setattr(compiled, "_problem", None)  # what aot_eager's probe finds goes with the test
    assert compiled.problem() is None


def test_a_call_that_compiles_is_timed_again(tmp_path, monkeypatch):
    """The first compiled call at a shape compiles: its seconds are torch.compile's, so it runs again and
    that run is timed; later calls at the same shape are timed once."""
    calls: list[str] = []
    timed = runtime.timed

    def counted(function, device):
        calls.append(getattr(function, "func", function).__class__.__name__)
        return timed(function, device)

    monkeypatch.setattr(runtime, "timed", counted)
    assert main(bench(tmp_path / "r.db", "--compile", "--quiet", methods="gradcam", limit=8)) == 0
    # two chunks of four images: the first compiles (timed twice), the second reuses it (once)
    assert calls.count("GradCAM") == 3
    calls.clear()
    assert main(bench(tmp_path / "e.db", "--no-compile", "--quiet", methods="gradcam", limit=8)) == 0
    assert calls.count("GradCAM") == 2


def test_a_compiled_method_that_fails_says_how_to_go_on(tmp_path, capsys, monkeypatch):
    def exploding(module, mode):
        def call(*args):
            raise RuntimeError("inductor: internal error\nlong trace")

        return call

    monkeypatch.setattr(compiled, "_compile", exploding)
    db = tmp_path / "r.db"
    assert main(bench(db, "--compile", methods="gradcam")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("jittercam: error: gradcam failed compiled (RuntimeError: inductor: internal error); the same "
                       "command with --no-compile resumes eagerly"), err
    assert main(bench(db, "--no-compile", "--quiet", methods="gradcam")) == 0
    assert len(_rows(db)) > 0


def test_the_metrics_cost_is_timed_per_arm(tmp_path):
    """Faithfulness's sweep scores 22 maps an item, the plain arm one: each arm's own metric seconds."""
    tiny = TinyCNN(8, 1000).eval()
    plain, sweep = Arm("gradcam", create("gradcam", tiny)), Arm("random", create("random", tiny))
    passes = {plain: 1, sweep: 0}
    line = progress.estimate_line("faithfulness", {plain: 10, sweep: 10}, passes.get, 0.01, torch.device("cpu"),
                                  {plain: 0.1, sweep: 2.0})
    assert "the metrics about 21 s (0.1-2 s per map, timed on one): random 0 passes per item (20 s with the " \
           "metrics); 1 other method 1 s;" in line, line


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "images"


def explain(out: Path, *extra: str) -> list[str]:
    photos = sorted(str(path) for path in EXAMPLES.glob("*.JPEG"))[:2]
    return ["explain", *photos, "--model", "tiny-autocompile", "--method", "gradcam,jittercam,centre", "--out",
            str(out), *extra]


def test_explain_compiles_a_long_run_by_itself_and_writes_the_eager_maps(tmp_path, capsys, monkeypatch):
    assert main(explain(tmp_path / "short")) == 0  # two photos: far from paying
    assert "run compiled" not in capsys.readouterr().out
    assert compiled.cached_entries(built[-1]) == 0
    _every_run_long(monkeypatch)
    assert main(explain(tmp_path / "auto")) == 0
    out = capsys.readouterr().out
    assert "the forward passes of gradcam, jittercam take about" in out and "--no-compile runs eagerly" in out, out
    assert compiled.cached_entries(built[-1]) > 0
    assert main(explain(tmp_path / "eager", "--no-compile")) == 0
    assert "run compiled" not in capsys.readouterr().out
    assert compiled.cached_entries(built[-1]) == 0
    maps = sorted(path.name for path in (tmp_path / "auto").glob("*.npy"))
    assert len(maps) == 6
    for name in maps:
        fast, eager = (torch.from_numpy(np.load(tmp_path / run / name)) for run in ("auto", "eager"))
        assert float((fast - eager).abs().max()) <= TOLERANCE * max(float(eager.abs().max()), 1e-12)


def test_explain_stays_eager_where_torch_compile_does_not_run(tmp_path, capsys, monkeypatch):
    _every_run_long(monkeypatch)
    monkeypatch.setattr(compiled, "_problem", "CalledProcessError: no C++ compiler")
    assert main(explain(tmp_path / "out")) == 0
    assert "torch.compile does not run here (CalledProcessError: no C++ compiler); the run stays eager" in \
        capsys.readouterr().out
    assert compiled.cached_entries(built[-1]) == 0


def test_the_sanity_check_stays_eager(tmp_path, capsys, monkeypatch):
    """Its maps are made on randomised copies of the model, each of which would compile again."""
    _every_run_long(monkeypatch)
    args = ["bench", "sanity", "--dataset", "offline", "--model", "tiny-autocompile", "--methods", "gradcam",
            "--limit", "1", "--db", str(tmp_path / "r.db")]
    assert main(args) == 0
    assert "run compiled" not in capsys.readouterr().err
    assert compiled.cached_entries(built[-1]) == 0


class Branchy(nn.Module):
    """A model torch.fx cannot trace (its forward branches on a value), so no method can compile it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 8, 4, stride=4), nn.Linear(8, 1000)

    def forward(self, x):
        y = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        return y if bool(y.sum() > -1e9) else -y


def test_a_method_that_cannot_compile_the_model_runs_eagerly_in_a_run_that_chose_to(tmp_path, capsys, monkeypatch):
    @register_model("tiny-branchy")
    def build(weights):
        torch.manual_seed(0)
        model = Branchy().eval()
        built.append(model)
        return model, ModelCard("tiny-branchy", 32, (0.5,) * 3, (0.5,) * 3, imagenet_categories())

    _every_run_long(monkeypatch)
    arguments = [part if part != "tiny-autocompile" else "tiny-branchy" for part in bench(tmp_path / "auto.db")]
    assert main(arguments) == 0
    assert "run compiled" in capsys.readouterr().err  # chosen; the methods then kept eager, the results the same
    assert main([*arguments[:-2], "--db", str(tmp_path / "eager.db"), "--no-compile"]) == 0
    _same_results(tmp_path / "auto.db", tmp_path / "eager.db")
    explained = [part if part != "tiny-autocompile" else "tiny-branchy" for part in explain(tmp_path / "maps")]
    assert main(explained) == 0
    assert len(list((tmp_path / "maps").glob("*.npy"))) == 6


def test_unless_refused_passes_other_refusals_on():
    def refuse(option):
        raise compiled.JitterCamError("no", option=option)

    assert compiled.unless_refused(lambda: 3) == 3
    assert compiled.unless_refused(lambda: refuse("compile")) is None
    with pytest.raises(compiled.JitterCamError):
        compiled.unless_refused(lambda: refuse("target_layer"))
