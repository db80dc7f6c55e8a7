"""One piece that every method uses to reach a layer's output: record it, replace it, or start the
autograd graph there — on one chosen call of the module, with the hook always removed afterwards."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..errors import JitterCamError

Replacement = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
MODES = ("record", "replace", "graph")


class _StopForward(Exception):
    """Raised by the hook to end a forward once the layer has run (`stop=True`)."""


class LayerCapture:
    """A context manager around forward passes that hooks call number `call` of `module`.

    Modes:

    * ``"record"`` keeps the output in `self.output` (detached). With ``stop=True`` the forward ends right
      after the layer: the rest of the network is not computed, and the model call, which must be the
      block's last statement, ends the block. Without it the output is kept as a copy, so that an in-place
      operation downstream (a residual `out += identity`, an in-place ReLU) cannot change it.
    * ``"replace"`` keeps the output in `self.output` and hands `replacement` downstream instead: a tensor,
      or a function of the original output. The network after the layer sees the replacement, whatever
      its batch size.
    * ``"graph"`` starts autograd at the layer: the forward may run under ``no_grad`` (the trunk builds no
      graph), `self.output` is a leaf that requires grad, and everything after the layer is recorded, so
      ``torch.autograd.grad(score, capture.output)`` gives the gradient with respect to the activations
      only — never into the parameters.

    A module that returns a tuple whose first item is a tensor (`nn.MultiheadAttention`'s output and weights)
    is captured at that tensor; the rest of the tuple passes unchanged.

    The call counter restarts at every model call (`reset()` is called on entering; call it again between
    two forwards inside one block).

    Args:
        module: the module whose output is captured.
        call: which call of `module` in one forward is hooked, 0-based (default: the first).
        mode: "record" (default), "replace" or "graph", as above.
        replacement: what "replace" hands downstream: a tensor, or a function of the original output;
            given with mode "replace", and only then.
        stop: end the forward right after the layer (mode "record" only).
        name: the layer's name in messages; None: the module's class name.
        layer (TargetLayer | None): the probed layer whose layout (`to_map`, `from_map`) turns a token
            sequence or a channels-last grid into the `(B, C, h, w)` map every mode hands over (the
            replacement and the graph's leaf are that map too); None: the output as it is.

    Raises:
        ValueError: an unknown `mode`, a `replacement` without mode "replace" (or that mode without one),
            or `stop` with another mode than "record".
        JitterCamError: on leaving, the layer did not run; during the forward, the hooked call returned
            something other than a tensor or a tuple that starts with one.
    """

    def __init__(
        self,
        module: nn.Module,
        call: int = 0,
        mode: str = "record",
        *,
        replacement: Replacement | None = None,
        stop: bool = False,
        name: str | None = None,
        layer=None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if (mode == "replace") != (replacement is not None):
            raise ValueError("a replacement is given with mode='replace', and only then")
        if stop and mode != "record":
            raise ValueError("stop=True is for mode='record' only")
        self.module, self.call, self.mode = module, call, mode
        self.replacement, self.stop = replacement, stop
        self.name = name or type(module).__name__
        self.layer = layer
        self.output: torch.Tensor | None = None
        self._calls = 0
        self._handle: RemovableHandle | None = None

    @classmethod
    def of(cls, layer, mode: str = "record", **options) -> LayerCapture:
        """A capture of a `TargetLayer` (its module and call).

        Args:
            layer (TargetLayer): the probed target layer (`find_target_layer`).
            mode: "record" (default), "replace" or "graph".
            **options (Any): `replacement` and `stop`, as the class takes them.

        Returns:
            The capture, to be entered with `with`.
        """
        return cls(layer.module, layer.call, mode, name=layer.name, layer=layer, **options)

    def reset(self) -> None:
        """Restart the call counter and forget the output (between two forwards inside one block)."""
        self._calls, self.output = 0, None

    def _hook(self, _module: nn.Module, _inputs, output):
        call, self._calls = self._calls, self._calls + 1
        if call != self.call:
            return None
        rest = None
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            output, rest = output[0], output[1:]  # the tensor first, as nn.MultiheadAttention's (output, weights)
        if not isinstance(output, torch.Tensor):
            raise JitterCamError(f"layer {self.name!r} returns a {type(output).__name__}, not a tensor")
        grid_map = output if self.layer is None else self.layer.to_map(output)
        if self.mode == "record":
            if self.stop:
                self.output = grid_map.detach()
                raise _StopForward
            self.output = grid_map.detach().clone()
            return None
        if self.mode == "replace":
            self.output = grid_map.detach()
            replacement = self.replacement
            assert replacement is not None  # checked in __init__
            handed = self._back(replacement(grid_map) if callable(replacement) else replacement, output)
        else:
            torch.set_grad_enabled(True)  # for the rest of this forward; the caller's no_grad block restores it
            leaf = self.output = grid_map.detach().requires_grad_(True)
            handed = self._back(leaf.clone(), output)  # a non-leaf, so that an in-place op downstream stays legal
        return handed if rest is None else (handed, *rest)

    def _back(self, grid_map: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return grid_map if self.layer is None else self.layer.from_map(grid_map, output)

    def __enter__(self) -> LayerCapture:
        self.reset()
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(self, kind, error, _traceback) -> bool:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if kind is not None:
            return kind is _StopForward  # a stopped forward is the expected end, anything else propagates
        if self.output is None:
            raise JitterCamError(f"target layer {self.name!r} did not run for this input")
        return False
