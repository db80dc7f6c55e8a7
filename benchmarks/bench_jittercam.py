"""Time Jitter-CAM per image against its patch batch size, and against the naive gradient path.

    python benchmarks/bench_jittercam.py [--model efficientnet_lite0] [--device cpu] [--batch-sizes 1 2 4 8 16 64]

"naive" is what the reference code does: a full autograd graph through the trunk and `.backward()`
into every parameter's `.grad`, hooks keeping activations and gradients; its maps are checked equal to
ours before timing. Numbers go to stdout as a markdown table.
"""
from __future__ import annotations

import argparse
import statistics

import torch

import jittercam
from jittercam.methods import CAMMethod
from jittercam.runtime import machine, timed


class NaiveGradCAM(CAMMethod):
    """Grad-CAM the way the reference code computes it: the whole graph, gradients into parameters."""

    def _explain(self, images, target):
        store = {}
        layer = self.layer
        calls = []

        def keep(_module, _inputs, output):
            calls.append(None)
            if len(calls) - 1 == layer.call:
                store["A"] = output
                output.register_hook(lambda grad: store.__setitem__("G", grad))

        handle = layer.module.register_forward_hook(keep)
        try:
            with torch.enable_grad():
                logits = self.model(images)
                classes = logits.argmax(1) if target is None else torch.as_tensor(target).expand(len(images))
                self.model.zero_grad()
                logits.gather(1, classes[:, None].to(logits.device)).sum().backward()
        finally:
            handle.remove()
        weights = store["G"].mean(dim=(2, 3))
        return torch.einsum("bc,bchw->bhw", weights, store["A"].detach()).relu()


def _time(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    return statistics.median(timed(fn, device)[1] for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--weights", default=None, help="state dict, or 'random' (torchvision models offline)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 64])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    model = jittercam.load_model(args.model, weights=args.weights).to(device)
    card = jittercam.model_card(model)
    image = jittercam.data.load_image("examples/images/ILSVRC2012_val_00000262.JPEG")
    batch = jittercam.data.to_input(image, card).to(device)

    print(f"model {args.model}, device {device}; machine: {machine(device)}")
    ours = jittercam.JitterCAM(model)
    naive = jittercam.JitterCAM(model, base=NaiveGradCAM(model))
    patches = (ours._check_size(ours.layer.map_size) - ours.layer.map_size + 1) ** 2
    torch.testing.assert_close(ours(batch), naive(batch), rtol=1e-4, atol=1e-6)

    print(f"\nJitter-CAM, {patches} patches of {card.input_size} px, median of {args.repeats}\n")
    print("| patch batch | ours (s) | naive: full graph + parameter grads (s) | naive / ours |")
    print("|---:|---:|---:|---:|")
    for size in args.batch_sizes:
        ours.batch_size = naive.batch_size = size
        ours.base.batch_size = naive.base.batch_size = size
        fast = _time(lambda: ours(batch), args.repeats, device)
        slow = _time(lambda: naive(batch), args.repeats, device)
        print(f"| {size} | {fast:.3f} | {slow:.3f} | {slow / fast:.2f} |")
    gradcam = jittercam.GradCAM(model)
    print(f"\nGrad-CAM, one image: {_time(lambda: gradcam(batch), args.repeats, device):.3f} s")


if __name__ == "__main__":
    main()
