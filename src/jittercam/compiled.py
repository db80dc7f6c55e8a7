"""Compiled forward passes (`torch.compile`) for the methods and metrics whose cost is forward passes.

`torch.compile` does not see module hooks added after it compiled a model, and the methods reach the
target layer with hooks (`LayerCapture`). So the compiled path uses no hook: the model is traced once with
`torch.fx` (the target layer kept as one call), and its graph is cut right after the layer's call into

* a **trunk**, input → (the layer's output, and whatever else the rest of the network reads from before the
  cut: a residual skipping the layer, a shape), and
* a **head**, those values → logits,

each a new `fx.GraphModule` sharing the model's submodules (their parameters and buffers, not copies: the
model itself is never changed, put in another mode or given a hook), compiled separately. A gradient with
respect to the activations is the gradient with respect to the head's first input; an ablated copy of the
activations is a head's input. Methods without a layer compile the whole traced model.

Compiled callables are kept per model (by weak reference: they go when the model goes) and per piece,
target layer, batch shape, device, dtype, memory layout, precision and mode, and built once. Batches are
padded (with copies of their first image) to the method's chunk size, so that the last, ragged chunk of a
run reuses the full chunks' compilation; a batch of one image keeps its own shape (the latency case, where
padding would multiply the work). Shapes are static (`dynamic=False`): one compilation per shape, none per
image.

Modes: "default" (inductor), "max-autotune", and "reduce-overhead" (inductor with CUDA graphs, for the
one-pass methods' single-image latency), which falls back to "default" on a device other than CUDA.
`compile=True` picks "reduce-overhead" on CUDA for the one-pass methods, "default" elsewhere.

When compiling pays (`pays`, `AUTO_SECONDS`): `torch.compile` costs a long first call and then runs the
forward passes faster. Measured on the dev machine (2 AMD EPYC cores, torch 2.14.1, idle, `benchmarks/speed.py
--compile`): Jitter-CAM 1.44x (Lite0) and 1.37x (ResNet50), deletion + insertion 1.57x and 1.34x, Grad-CAM
1.44x and 1.00x (2026-12-07), after 20-60 s of compiling per piece (two to three times that under load, a few
seconds from inductor's on-disk cache). Much of that was glibc returning freed activations to the system: with
them retained (`runtime.retain_freed_memory`, as the command line runs, 2026-12-08) eager runs got 1.1-1.8x
faster and compiling gains less, in two runs Jitter-CAM 1.12x / 1.65x (Lite0) and 1.07x / 1.24x (ResNet50),
deletion + insertion 1.12x (Lite0) and 0.91x (ResNet50), Grad-CAM 1.30x and 1.28x. So on a CPU it pays where the
passes it speeds up take many minutes and loses on short runs: `jittercam bench` and `jittercam explain`
compile by themselves when those passes are estimated at `AUTO_SECONDS` or more and the time they save
(`SAVED` of it) exceeds what compiling their pieces costs (`PIECE_SECONDS` each: a run over several target
layers or input sizes — the layers experiment, Upscale-CAM's size sweep — compiles a piece for each). Not on a
GPU yet: the compiled path there is unmeasured (`benchmarks/gpu_check.sh` measures it); `compile=True` turns
it on.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import fx, nn

from .errors import JitterCamError
from .words import duration

MODES = ("default", "reduce-overhead", "max-autotune")
AUTO_SECONDS = 600.0  # eager seconds of compilable passes from which a CPU run compiles by itself
PIECE_SECONDS = 40.0  # compiling one piece on a CPU (20-60 s measured idle; Upscale-CAM's 14 sizes: 9 min)
SAVED = 1 - 1 / 1.15  # the share of its eager time a compiled CPU run saves (ResNet50's Jitter-CAM: 1.07-1.24x)
MAX_PASS_SECONDS = 0.5  # no forward pass on a CPU is slower: a run of fewer than AUTO_SECONDS / this is not timed
BACKEND = "inductor"  # torch.compile's backend; tests of the bookkeeping set "aot_eager" (no C++ compiler run)
Compile = bool | str | None
T = TypeVar("T")

_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple, Any]] = weakref.WeakKeyDictionary()


def check_compile(value: Compile) -> str | None:
    """The compile option as a method stores it.

    Args:
        value: False or None (eager), True ("auto": chosen per device and method), or a mode of `MODES`.

    Returns:
        None for eager, else "auto" or the mode.

    Raises:
        JitterCamError: any other value (`option="compile"`).
    """
    if value is None or value is False:
        return None
    if value is True:
        return "auto"
    if isinstance(value, str) and value in MODES:
        return value
    raise JitterCamError(f"compile must be True, False or one of {', '.join(MODES)}, not {value!r}",
                         option="compile")


def pays(device: torch.device, seconds: float, pieces: int = 1) -> bool:
    """Whether a run whose compilable forward passes take `seconds` eagerly on `device` compiles them when
    not told (`AUTO_SECONDS`, `SAVED`, `PIECE_SECONDS`; see the module's docstring).

    Args:
        device: where the run's passes go.
        seconds: the estimate of those passes, eager.
        pieces: the distinct pieces the run would compile (a target layer's trunk and head, or a whole
            model, at one input size: see `CAMMethod.compiled_pieces`).

    Returns:
        True on a CPU from `AUTO_SECONDS` on, where the time saved exceeds the compiling.
    """
    return device.type == "cpu" and seconds >= AUTO_SECONDS and seconds * SAVED >= pieces * PIECE_SECONDS


def pieces(methods: Iterable[Any], input_size: int) -> int:
    """How many distinct pieces `methods` (built `CAMMethod`s) compile at `input_size`, each counted once
    however many of them share it (`CAMMethod.compiled_pieces`), for `pays`."""
    return len(set().union(*(method.compiled_pieces(input_size) for method in methods)))


def problem() -> str | None:
    """Why torch.compile cannot run on this machine (no C++ compiler, no Python headers, ...), in one line,
    or None when a tiny function compiles and runs (a few seconds, once per process).

    Returns:
        The reason, or None.
    """
    global _problem
    if _problem is None:
        try:
            probe = torch.compile(lambda x: (x * 2).sin().sum(), backend=BACKEND, dynamic=False)
            ok = float(probe(torch.ones(4))) == float((torch.ones(4) * 2).sin().sum())
            _problem = "" if ok else "a compiled test function gave a wrong value"
        except Exception as exc:  # noqa: BLE001 - whatever inductor raises here means: run eagerly
            text = str(exc).strip().splitlines()
            _problem = f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
    return _problem or None


_problem: str | None = None


def _not_the_cuda_runtime_note(record: logging.LogRecord) -> bool:
    # torch.utils.cpp_extension, which inductor loads on the first compile, warns "No CUDA runtime is found"
    # on any machine with a CUDA toolkit and no GPU: noise in a run that compiles for the CPU
    return not record.getMessage().startswith("No CUDA runtime is found")


logging.getLogger("torch.utils.cpp_extension").addFilter(_not_the_cuda_runtime_note)


def choose(device: torch.device, passes: int, pass_seconds: Callable[[], float],
           methods: Sequence[str], pieces: int = 1) -> tuple[bool, str | None]:
    """Whether a run left to decide (`jittercam bench`, `jittercam explain`) compiles, and the line it says.

    Args:
        device: where the run's passes go.
        passes: the forward passes of its methods that have a compiled path, over every item.
        pass_seconds: times one eager forward pass; called only where the passes could be long enough.
        methods: the names of those methods, for the line.
        pieces: the distinct pieces it would compile (see `pays`).

    Returns:
        `(compile, line)`: True where it pays (`pays`) and torch.compile runs here (`problem`); the line
            says why it compiles or why it stays eager where it would have paid, None where there is
            nothing to say.
    """
    if device.type != "cpu" or not methods or passes * MAX_PASS_SECONDS < AUTO_SECONDS:
        return False, None
    seconds = passes * pass_seconds()
    if not pays(device, seconds, pieces):
        if seconds < AUTO_SECONDS:
            return False, None
        return False, (f"the forward passes of {', '.join(methods)} take about {duration(seconds)} eagerly, but "
                       f"compiling their {pieces} pieces (one per target layer and input size) would take about "
                       f"{duration(pieces * PIECE_SECONDS)}, more than it saves; the run stays eager (--compile "
                       "compiles anyway)")
    reason = problem()
    if reason is not None:
        return False, f"torch.compile does not run here ({reason}); the run stays eager"
    return True, (f"the forward passes of {', '.join(methods)} take about {duration(seconds)} eagerly, so they run "
                  "compiled (torch.compile: 1.1-1.6x faster on a CPU after a few minutes of compiling, once; "
                  "--no-compile runs eagerly)")


def unless_refused(build: Callable[[], T]) -> T | None:
    """`build()` — a method built with `compile=True` for a run that chose to compile (`choose`) — or None
    where the method refuses to compile this model (torch.fx cannot cut it: a refusal of option "compile"),
    so that the run keeps that method eager. Any other refusal is raised."""
    try:
        return build()
    except JitterCamError as exc:
        if exc.option != "compile":
            raise
        return None


def resolve_mode(requested: str, device: torch.device, one_pass: bool) -> str:
    """The `torch.compile` mode used on `device`.

    Args:
        requested: "auto" or a mode of `MODES`.
        device: where the forward passes run.
        one_pass: the method costs one forward (and backward) per image, so single-image latency is
            launch-bound and CUDA graphs pay.

    Returns:
        "reduce-overhead" for "auto" on CUDA with `one_pass`, else "default"; "reduce-overhead" asked for
            on another device than CUDA falls back to "default" (CUDA graphs exist on CUDA only).
    """
    if requested == "auto":
        return "reduce-overhead" if device.type == "cuda" and one_pass else "default"
    if requested == "reduce-overhead" and device.type != "cuda":
        return "default"
    return requested


def padded_rows(rows: int, batch: int) -> int:
    """The batch size a compiled call of `rows` images runs at: `batch` (the chunk size), one image alone
    as itself, more than `batch` as they are.

    Args:
        rows: the images in the call.
        batch: the method's chunk size.

    Returns:
        The padded number of rows.
    """
    return rows if rows == 1 or rows >= batch else batch


def _layout(images: torch.Tensor) -> str:
    if images.dim() == 4 and images.stride(1) == 1 and images.shape[1] > 1 and not images.is_contiguous():
        return "channels_last"
    return "contiguous"


def pad(images: torch.Tensor, rows: int) -> torch.Tensor:
    """`images` with copies of its first image appended up to `rows` (same dtype and device), contiguous or
    channels-last (whichever `images` is closer to).

    Args:
        images: a batch `(B, ...)`.
        rows: the number of rows wanted, at least B.

    Returns:
        `(rows, ...)`: the images, then copies of the first.
    """
    layout = torch.channels_last if _layout(images) == "channels_last" else torch.contiguous_format
    missing = rows - images.shape[0]
    if missing > 0:
        images = torch.cat([images, images[:1].expand(missing, *images.shape[1:])])
    return images.contiguous(memory_format=layout)  # one of two layouts: other strides would recompile


class _Tracer(fx.Tracer):
    """torch.fx's tracer with the target layer kept as one call (not traced into)."""

    def __init__(self, leaf: nn.Module | None) -> None:
        super().__init__()
        self.leaf = leaf

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """The target layer is a leaf, as are torch's own modules.

        Args:
            m: a submodule met during tracing.
            module_qualified_name: its name in the model.

        Returns:
            Whether the module stays one call in the graph.
        """
        return m is self.leaf or super().is_leaf_module(m, module_qualified_name)


def trace(model: nn.Module, leaf: nn.Module | None = None) -> tuple[fx.GraphModule, str | None]:
    """The model's forward as an `fx.GraphModule` (sharing the model's submodules) and the leaf's name.

    Args:
        model: the classifier.
        leaf: a submodule kept as one call in the graph (the target layer), or None.

    Returns:
        `(graph module, the leaf's path in the graph or None)`.

    Raises:
        JitterCamError: torch.fx cannot trace the model (data-dependent control flow, ...).
    """
    tracer = _Tracer(leaf)
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - whatever tracing raises, said in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JitterCamError(f"compile needs a model torch.fx can trace; {type(model).__name__} is not ({reason})",
                             option="compile") from None
    path = None if leaf is None else tracer.path_of_module(leaf)
    return fx.GraphModule(tracer.root, graph), path


def split(model: nn.Module, module: nn.Module, call: int = 0) -> tuple[fx.GraphModule, fx.GraphModule]:
    """The model cut right after call number `call` of `module`: a trunk and a head.

    The trunk maps the input to a tuple whose first item is the layer's output and whose others are the
    values computed before the cut that the rest of the network reads; the head maps that tuple's items
    (as separate arguments) to the model's output, so `head(*trunk(x))` is `model(x)`.

    Args:
        model: the classifier.
        module: the target layer, a submodule of `model`.
        call: which call of `module` in one forward (0-based).

    Returns:
        `(trunk, head)`, two `fx.GraphModule`s sharing the model's submodules.

    Raises:
        JitterCamError: torch.fx cannot trace the model, or the layer is not called `call + 1` times.
    """
    traced, path = trace(model, module)
    nodes = list(traced.graph.nodes)
    calls = [node for node in nodes if node.op == "call_module" and node.target == path]
    if len(calls) <= call:
        raise JitterCamError(f"compile: the traced model calls layer {path!r} {len(calls)} times, not {call + 1}",
                             option="compile")
    cut = nodes.index(calls[call]) + 1
    before = set(nodes[:cut])
    crossing = [calls[call]] + [
        node for node in nodes[:cut] if node is not calls[call] and any(user not in before for user in node.users)
    ]
    trunk_graph, trunk_values = fx.Graph(), dict[fx.Node, fx.Node]()
    for node in nodes[:cut]:
        trunk_values[node] = trunk_graph.node_copy(node, lambda value: trunk_values[value])
    trunk_graph.output(tuple(trunk_values[node] for node in crossing))
    head_graph, head_values = fx.Graph(), dict[fx.Node, fx.Node]()
    for index, node in enumerate(crossing):
        head_values[node] = head_graph.placeholder(f"cut_{index}")
    for node in nodes[cut:]:
        head_values[node] = head_graph.node_copy(node, lambda value: head_values[value])
    return fx.GraphModule(traced, trunk_graph), fx.GraphModule(traced, head_graph)



def _compile(module: nn.Module, mode: str) -> Callable:
    if BACKEND != "inductor":  # a mode is inductor's
        return torch.compile(module, backend=BACKEND, dynamic=False)
    return torch.compile(module, mode=mode, dynamic=False)


def _entry(model: nn.Module, key: tuple, build: Callable[[], Any]) -> Any:
    entries = _cache.setdefault(model, {})
    if key not in entries:
        entries[key] = build()
    return entries[key]


def cached_entries(model: nn.Module) -> int:
    """How many compiled pieces are kept for `model` (for tests and diagnostics).

    Args:
        model: the classifier.

    Returns:
        The number of cached compiled callables.
    """
    return len(_cache.get(model, {}))


def _key(piece: str, images: torch.Tensor, mode: str, extra: Sequence[Any]) -> tuple:
    return (piece, *extra, tuple(images.shape), images.device, images.dtype, _layout(images), mode,
            torch.is_autocast_enabled(images.device.type), torch.get_autocast_dtype(images.device.type))


def _called(function: Callable, mode: str) -> Callable:
    """`function` wrapped so that a CUDA-graph replay's outputs are copied before the next replay reuses them."""
    if mode != "reduce-overhead":
        return function

    def call(*args):
        torch.compiler.cudagraph_mark_step_begin()
        out = function(*args)
        return tuple(value.clone() if isinstance(value, torch.Tensor) else value for value in out) \
            if isinstance(out, tuple) else out.clone()

    return call


def forward(model: nn.Module, images: torch.Tensor, mode: str) -> torch.Tensor:
    """The model's output on `images`, from its compiled, traced forward (no padding here: give full
    batches, see `padded_rows`). Autocast and grad mode are the caller's. A model torch.fx cannot trace is
    compiled as it is (`torch.compile` wraps it; the model is not changed).

    Args:
        model: the classifier.
        images: the batch, at the shape it is compiled for.
        mode: a mode of `MODES` (resolved: see `resolve_mode`).

    Returns:
        The model's output.
    """
    mode = resolve_mode(mode, images.device, False)

    def build() -> Callable:
        try:
            module: nn.Module = trace(model)[0]
        except JitterCamError:  # no hook is needed here: torch.compile's own capture of the model will do
            module = model
        return _called(_compile(module, mode), mode)

    return _entry(model, _key("forward", images, mode, (torch.is_grad_enabled(),)), build)(images)


def trunk_and_head(model: nn.Module, layer, images: torch.Tensor, mode: str,
                   grad: bool) -> tuple[Callable, Callable]:
    """The compiled trunk and head of `model` cut after its target layer, for batches like `images`.

    Args:
        model: the classifier.
        layer (TargetLayer): the probed target layer (its module and call).
        images: a batch at the shape the pieces are compiled for.
        mode: a mode of `MODES` (resolved).
        grad: the head is run to take a gradient with respect to its first input (compiled with autograd).

    Returns:
        `(trunk, head)`: `trunk(images)` gives a tuple (the layer's output first), `head(*values)` the
            output.

    Raises:
        JitterCamError: torch.fx cannot trace the model, or the layer is not called as the probe saw it.
    """
    mode = resolve_mode(mode, images.device, True)
    key = _key("split", images, mode, (layer.name, layer.call, grad))

    def build() -> tuple[Callable, Callable]:
        trunk, head = split(model, layer.module, layer.call)
        return _called(_compile(trunk, mode), mode), _called(_compile(head, mode), mode)

    return _entry(model, key, build)


def head_inputs(model: nn.Module, layer) -> int:
    """How many values cross the cut after the target layer (1: the head reads the layer's output alone).

    Args:
        model: the classifier.
        layer (TargetLayer): the probed target layer.

    Returns:
        The number of the head's inputs.

    Raises:
        JitterCamError: torch.fx cannot trace the model.
    """
    def build() -> int:
        _, head = split(model, layer.module, layer.call)
        return sum(1 for node in head.graph.nodes if node.op == "placeholder")

    return _entry(model, ("head_inputs", layer.name, layer.call), build)
