"""The uncertainty of a fine-tuning result: a bootstrap interval over test videos, mean and spread over seeds.

One fine-tuning run keeps which test videos it got right (result.json: `correct`, `correct_single`); a
percentile bootstrap over those videos gives a 95 % interval of its top-1. A sweep with `seeds` runs each
target once per seed: its value is the mean over seeds, its spread the sample standard deviation, and its
interval the bootstrap over test videos of the per-video mean over seeds (each video scores the fraction of
seeds that got it right). The MLflow metric names live here too, so what a trial logs and what the report
reads agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 0  # fixed: the same result always gives the same interval
METRICS = ("top1", "top1_single")
PER_VIDEO = {"top1": "correct", "top1_single": "correct_single"}  # result.json key of each metric's 0/1 list
SEED_SUFFIX = re.compile(r"\.seed(\d+)$")


def bootstrap_interval(scores: Sequence[float], *, resamples: int = RESAMPLES, level: float = LEVEL,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval (in %) of the mean of per-video scores (1 right, 0 wrong, or a fraction).

    Videos are resampled with replacement `resamples` times from a generator seeded with `seed`, so the
    interval is deterministic.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty list of per-video scores, got shape {x.shape}")
    rng = np.random.default_rng(seed)
    n, means = x.size, np.empty(resamples)
    block = max(1, 2_000_000 // n)  # resamples per draw: bounded memory for large test sets
    for start in range(0, resamples, block):
        stop = min(start + block, resamples)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(100 * means, [tail, 100 - tail])
    return float(lo), float(hi)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1) of the values; the std is None for a single value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("need at least one value")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


@dataclass(frozen=True)
class Estimate:
    """A metric with its uncertainty: value (mean over seeds), sample std over seeds, a bootstrap interval over
    test videos, and each seed's value (empty without seeds)."""

    value: float
    std: float | None = None
    lo: float | None = None
    hi: float | None = None
    values: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        """Runs behind the value (the number of seeds, at least 1)."""
        return max(len(self.values), 1)

    def error(self) -> tuple[float, float] | None:
        """(below, above) the value for an error bar: the std over seeds, else the interval, else None."""
        if self.n > 1 and self.std is not None:
            return self.std, self.std
        if self.lo is not None and self.hi is not None:
            return max(self.value - self.lo, 0.0), max(self.hi - self.value, 0.0)
        return None

    def format(self, digits: int = 1) -> str:
        """'35.2 ± 3.1 (n=3: 33.0, 34.1, 38.5)' over seeds, '35.2 [28.5, 41.9]' for one run, else '35.2'."""
        f = f"{{:.{digits}f}}"
        if self.n > 1 and self.std is not None:
            each = ", ".join(f.format(v) for v in self.values)
            return f"{f.format(self.value)} ± {f.format(self.std)} (n={self.n}: {each})"
        if self.lo is not None and self.hi is not None:
            return f"{f.format(self.value)} [{f.format(self.lo)}, {f.format(self.hi)}]"
        return f.format(self.value)


def estimate(results: Sequence[dict[str, Any]], metric: str = "top1", seeds: Sequence[int] = ()) -> Estimate:
    """The estimate of one target from its fine-tuning results (one per seed, in the order of `seeds`).

    The interval needs every result's per-video list, all of one length (the same test videos); results
    written before those lists were kept give no interval.
    """
    if not results:
        raise ValueError("need at least one fine-tuning result")
    values = [float(r[metric]) for r in results]
    mean, std = mean_std(values)
    lists = [r.get(PER_VIDEO[metric]) for r in results]
    lo = hi = None
    if all(lists) and len({len(c) for c in lists}) == 1:
        lo, hi = bootstrap_interval(np.mean(np.asarray(lists, dtype=np.float64), axis=0))
    return Estimate(mean, std, lo, hi, tuple(values) if seeds else (), tuple(seeds))


def target_metrics(name: str, results: Sequence[dict[str, Any]], seeds: Sequence[int] | None) -> dict[str, float]:
    """The MLflow metrics of one fine-tuning target: `<metric>.<name>` (mean over seeds), `<metric>_std.<name>`,
    `<metric>_lo.<name>` / `<metric>_hi.<name>` (bootstrap 95 %), `<metric>.<name>.seed<k>` for each seed,
    `classes.<name>` and `test_videos.<name>` (for the chance level and the table's note)."""
    seeds = list(seeds or [])
    out: dict[str, float] = {}
    for metric in METRICS:
        e = estimate(results, metric, seeds)
        out[f"{metric}.{name}"] = e.value
        if e.std is not None:
            out[f"{metric}_std.{name}"] = e.std
        if e.lo is not None and e.hi is not None:
            out[f"{metric}_lo.{name}"], out[f"{metric}_hi.{name}"] = e.lo, e.hi
        for seed, value in zip(seeds, e.values):
            out[f"{metric}.{name}.seed{seed}"] = value
    for key in ("classes", "test_videos"):
        if results[0].get(key) is not None:
            out[f"{key}.{name}"] = float(results[0][key])
    return out


def is_seed_metric(key: str) -> bool:
    """A per-seed metric (`top1.<target>.seed<k>`), as opposed to the target's summary."""
    return SEED_SUFFIX.search(key) is not None


def read_estimate(metrics: dict[str, float], metric: str, target: str) -> Estimate | None:
    """The estimate of a target from a trial's MLflow metrics (None when the trial has no value for it)."""
    value = metrics.get(f"{metric}.{target}")
    if value is None:
        return None
    prefix = f"{metric}.{target}.seed"
    per_seed = sorted((int(k[len(prefix):]), v) for k, v in metrics.items()
                      if k.startswith(prefix) and k[len(prefix):].isdigit())
    return Estimate(value, metrics.get(f"{metric}_std.{target}"), metrics.get(f"{metric}_lo.{target}"),
                    metrics.get(f"{metric}_hi.{target}"), tuple(v for _, v in per_seed), tuple(s for s, _ in per_seed))
