"""What a benchmark run says about its time: the cost estimate said before it starts, and the progress bar
over (method, item) pairs with a time left that follows the measured pace."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping

import torch
from tqdm import tqdm

from .. import runtime
from ..words import duration, plural
from .experiments import Arm

LONG = 600.0  # seconds: an estimate above this comes with ways to shorten the run
LOG_EVERY = 300.0  # seconds between the progress lines of a run whose stderr is no terminal (a log file)


def estimate_line(experiment: str, left: dict[Arm, int], passes, forward: float, device: torch.device,
                  metric: float | Mapping[Arm, float] | None = None) -> str:
    """What the run will cost, said before it starts: each arm's items to do x (its forward passes per
    explanation x the seconds of one forward pass measured here + `metric`, the seconds the metrics took on
    one item, per arm or for all, when they were timed); the slow arms by name, and ways to shorten the run
    when it is long."""
    per_arm = metric if isinstance(metric, Mapping) else dict.fromkeys(left, metric or 0.0)
    costs = {arm: count * (passes(arm) * forward + per_arm.get(arm, 0.0)) for arm, count in left.items() if count}
    total = sum(costs.values())
    explaining = sum(count * passes(arm) * forward for arm, count in left.items())
    heavy = sorted((arm for arm in costs if costs[arm] > 0.1 * total), key=lambda arm: -costs[arm])
    metrics = "" if metric is None else " with the metrics"
    parts = [f"{arm.label} {plural(passes(arm), 'pass', 'passes')} per item ({duration(costs[arm])}{metrics})"
             for arm in heavy]
    others = len(costs) - len(heavy)
    if others:
        parts.append(f"{plural(others, 'other method')} {duration(total - sum(costs[arm] for arm in heavy))}")
    where = runtime.device_name(device)
    if device.type == "cpu":
        where += f", {plural(torch.get_num_threads(), 'thread')}"
    if metric is None:
        cost = (f"their forward passes alone take about {duration(total)}: {'; '.join(parts)}; the metrics add "
                f"to it")
    else:
        timed = sorted({per_arm[arm] for arm in costs if arm in per_arm}) or [0.0]
        pace = f"{timed[0]:.2g} s" if f"{timed[0]:.2g}" == f"{timed[-1]:.2g}" else f"{timed[0]:.2g}-{timed[-1]:.2g} s"
        cost = (f"their forward passes take about {duration(explaining)} and the metrics about "
                f"{duration(total - explaining)} ({pace} per map, timed on one): {'; '.join(parts)}")
    line = (f"{experiment}: {plural(sum(left.values()), 'explanation')} to compute; at {forward * 1000:.3g} ms per "
            f"forward pass (measured on {where}) {cost}; the bar's time left follows the measured pace")
    if total <= LONG:
        return line
    tips = []
    for arm in heavy:
        masks = getattr(arm.explainer, "masks", None)
        if isinstance(masks, int) and masks > 1000:
            tips.append(f"--option {arm.method}.masks=1000 ({masks / 1000:g}x fewer passes)")
    slow = {arm.method for arm in heavy}
    rest = list(dict.fromkeys(arm.method for arm in left if arm.method not in slow))
    if heavy and rest:
        tips.append(f"--methods {','.join(rest)} (without {' and '.join(sorted(slow))})")
    tips.append("--limit N")
    if device.type == "cpu" and torch.cuda.is_available():
        tips.append("--device cuda")
    return f"{line}\nto shorten it: {'; '.join(tips)}. Ctrl-C keeps every finished item; the same command resumes"


class Progress:
    """The bar over (method, item) pairs and the time left. An arm that has finished items takes its measured
    seconds per item; one that has not, its forward passes times the seconds of one forward pass, plus what
    the measured arms spent beyond theirs (the metrics' passes, the same for every arm). Redrawn every second
    while it is on a terminal, the time left counting down during a long item. Where the bar is not drawn
    (stderr a log file) and `log` names the experiment, a line every `LOG_EVERY` seconds says the same."""

    TICK = 1.0

    def __init__(self, bar: tqdm, left: dict[Arm, int], prior: dict[Arm, float], log: str | None = None) -> None:
        self.bar, self.left, self.prior = bar, dict(left), prior
        self.spent: dict[Arm, float] = {}
        self.items: dict[Arm, int] = {}
        self.since = time.perf_counter()  # the last finished item
        self.log = log if bar.disable else None
        self.started = self.logged = self.since
        self.total, self.done = sum(left.values()), 0
        self.stop = threading.Event()
        self.ticker = threading.Thread(target=self._tick, daemon=True)
        self._show()

    def __enter__(self) -> Progress:
        if not self.bar.disable:
            self.ticker.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        if self.ticker.is_alive():
            self.ticker.join()

    def per_item(self, arm: Arm) -> float:
        if self.items.get(arm):
            return self.spent[arm] / self.items[arm]
        measured = [self.spent[a] / self.items[a] - self.prior[a] for a in self.items if self.items[a]]
        return self.prior[arm] + max(0.0, sum(measured) / len(measured) if measured else 0.0)

    def seconds_left(self) -> float:
        return sum(count * self.per_item(arm) for arm, count in self.left.items())

    def finished(self, arm: Arm, items: int, seconds: float | None) -> None:
        """`items` of `arm` done (or refused), in `seconds` (None: refused, not a measure of its pace)."""
        self.left[arm] -= items
        if seconds is not None:
            self.spent[arm] = self.spent.get(arm, 0.0) + seconds
            self.items[arm] = self.items.get(arm, 0) + items
        self.since = time.perf_counter()
        self._show()
        self.bar.update(items)
        self._count(items)

    def skipped(self, arms: list[Arm]) -> None:
        """One item skipped for all of `arms`."""
        for arm in arms:
            self.left[arm] -= 1
        self._show()
        self.bar.update(len(arms))
        self._count(len(arms))

    def _count(self, maps: int) -> None:
        self.done += maps
        now = time.perf_counter()
        if self.log is None or now - self.logged < LOG_EVERY or self.done >= self.total:
            return
        self.logged = now
        print(f"{self.log}: {self.done}/{self.total} maps in {duration(now - self.started)}, about "
              f"{duration(self.seconds_left())} left", file=sys.stderr, flush=True)

    def _show(self) -> None:
        left = max(0.0, self.seconds_left() - (time.perf_counter() - self.since))
        self.bar.set_postfix_str(f"~{tqdm.format_interval(left)} left", refresh=False)

    def _tick(self) -> None:
        while not self.stop.wait(self.TICK):
            self._show()
            self.bar.refresh()
