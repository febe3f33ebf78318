"""Intensity normalization with statistics as an explicit input.

The statistics a normalization needs (min/max, mean/std, percentiles) are computed
separately from applying them, so the same :func:`normalize` serves per-item statistics
(:func:`compute_stats` on the item itself) and dataset statistics (a first pass that feeds
every item to a :class:`StatsAccumulator`, merges the accumulators of all workers, and
hands :meth:`StatsAccumulator.result` to every item).

Modes:

* ``minmax``: ``(x - min) / (max - min)`` scaled to ``output_range``.
* ``zscore``: ``(x - mean) / std``.
* ``percentile_zscore``: nnU-Net's CT normalization: clip to the ``lower``/``upper``
  percentiles (0.5/99.5 by default), then ``(x - mean) / std`` where ``mean``/``std`` are
  those of the (unclipped) voxels inside the mask, as nnU-Net computes them.
* ``percentile_clip``: clip to the percentiles only (values stay in input units).
* ``fixed``: per-channel ``(x - mean[c]) / std[c]`` with given numbers (e.g. ImageNet).

Statistics can be restricted to voxels strictly above a threshold (``above``, e.g. -500 HU
for "body, not air"); the normalization itself is applied to every voxel.
All arithmetic is float64 (block by block, so memory stays bounded); outputs are float32.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medflow.ops.intensity import BLOCK, blockwise

MODES = ("minmax", "zscore", "percentile_zscore", "percentile_clip", "fixed")
STAT_MODES = ("minmax", "zscore", "percentile_zscore", "percentile_clip")
EPS = 1e-8  # floor of std (as nnU-Net), keeps a constant image finite


def stats_values(x: np.ndarray, above: float | None = None) -> np.ndarray:
    """The values statistics are computed on: all of ``x``, or those ``> above``; 1-D, x's dtype.

    Raises:
        ValueError: no value is left (empty array, or nothing above the threshold).
    """
    values = np.asarray(x).ravel()
    if above is not None:
        values = values[values > above]
    if values.size == 0:
        where = f" above {above}" if above is not None else ""
        raise ValueError(f"no voxel{where} to compute normalization statistics on")
    return values


def compute_stats(
    x: np.ndarray,
    mode: str,
    *,
    above: float | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, float]:
    """Exact statistics of one array for ``mode`` (per-item scope).

    Args:
        x: values (any shape, any numeric dtype), e.g. HU.
        mode: one of ``minmax``, ``zscore``, ``percentile_zscore``, ``percentile_clip``.
        above: only values strictly greater than this enter the statistics (input units).
        percentiles: ``(low, high)`` in percent, for the percentile modes; numpy's default
            (linear interpolation) definition.

    Returns:
        ``{"min", "max"}`` for minmax; ``{"mean", "std", "count"}`` for zscore;
        ``{"lower", "upper", "mean", "std", "count"}`` for the percentile modes. ``std`` is
        the population standard deviation (ddof=0).
    """
    values = stats_values(x, above)
    if mode == "minmax":
        return {"min": float(values.min()), "max": float(values.max())}
    accumulator = MomentsAccumulator()
    for start in range(0, values.size, BLOCK):
        accumulator.update(values[start : start + BLOCK])
    moments = {"mean": accumulator.mean, "std": accumulator.std, "count": accumulator.count}
    if mode == "zscore":
        return moments
    if mode in ("percentile_zscore", "percentile_clip"):
        lower, upper = np.percentile(values.astype(np.float64), percentiles)
        return {"lower": float(lower), "upper": float(upper), **moments}
    raise ValueError(f"mode {mode!r} computes no statistics; expected one of {STAT_MODES}")


def normalize(
    x: np.ndarray,
    mode: str,
    stats: dict[str, Any],
    *,
    output_range: tuple[float, float] = (0.0, 1.0),
    channel_axis: int | None = None,
) -> np.ndarray:
    """Apply a normalization with given statistics.

    Args:
        x: values, any shape.
        mode: one of :data:`MODES`.
        stats: as returned by :func:`compute_stats` or :meth:`StatsAccumulator.result`;
            for ``fixed``: ``{"mean": [...], "std": [...]}``, one number per channel (or one).
        output_range: ``[y_min, y_max]`` for ``minmax`` only. A constant input (max == min)
            maps to ``y_min``.
        channel_axis: the channel axis of ``x`` for ``fixed`` with several channels.

    Returns:
        float32 array of ``x``'s shape.
    """
    if mode == "fixed":
        return _fixed(np.asarray(x), stats, channel_axis)
    if mode == "minmax":
        lo, hi = float(stats["min"]), float(stats["max"])
        y_min, y_max = output_range
        span = hi - lo
        if span > 0:
            return blockwise(x, lambda v: (v - lo) / span * (y_max - y_min) + y_min)
        return np.full(np.shape(x), y_min, dtype=np.float32)
    if mode == "zscore":
        mean, std = float(stats["mean"]), max(float(stats["std"]), EPS)
        return blockwise(x, lambda v: (v - mean) / std)
    if mode in ("percentile_clip", "percentile_zscore"):
        lower, upper = float(stats["lower"]), float(stats["upper"])
        if mode == "percentile_clip":
            return blockwise(x, lambda v: np.clip(v, lower, upper))
        mean, std = float(stats["mean"]), max(float(stats["std"]), EPS)
        return blockwise(x, lambda v: (np.clip(v, lower, upper) - mean) / std)
    raise ValueError(f"unknown normalization mode {mode!r}; expected one of {MODES}")


def _fixed(x: np.ndarray, stats: dict[str, Any], channel_axis: int | None) -> np.ndarray:
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    if mean.shape != std.shape or mean.ndim != 1 or mean.size == 0:
        raise ValueError(f"fixed normalization needs equal-length mean and std lists, got {mean} / {std}")
    if np.any(std <= 0):
        raise ValueError(f"fixed normalization std must be > 0, got {std.tolist()}")
    if mean.size == 1:
        m, s = float(mean[0]), float(std[0])
        return blockwise(x, lambda v: (v - m) / s)
    if channel_axis is None:
        raise ValueError(f"{mean.size} means given but the array has no channel axis")
    n_channels = x.shape[channel_axis]
    if n_channels != mean.size:
        raise ValueError(f"{mean.size} means/stds given for {n_channels} channels")
    out = np.empty(x.shape, dtype=np.float32)
    for c in range(n_channels):
        index = [slice(None)] * x.ndim
        index[channel_axis] = c
        m, s = float(mean[c]), float(std[c])
        out[tuple(index)] = blockwise(np.ascontiguousarray(x[tuple(index)]), lambda v, m=m, s=s: (v - m) / s)
    return out


class MomentsAccumulator:
    """Mergeable count / mean / sum of squared deviations (Chan et al.'s parallel update).

    Numerically safer than count/sum/sum-of-squares for values like HU whose mean is large
    against their spread; merging two accumulators is exact up to rounding.
    """

    def __init__(self, count: int = 0, mean: float = 0.0, m2: float = 0.0):
        self.count, self.mean, self.m2 = int(count), float(mean), float(m2)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size:
            batch_mean = float(values.mean())
            batch_m2 = float(((values - batch_mean) ** 2).sum())
            self.merge(MomentsAccumulator(values.size, batch_mean, batch_m2))

    def merge(self, other: MomentsAccumulator) -> None:
        if other.count == 0:
            return
        total = self.count + other.count
        delta = other.mean - self.mean
        self.m2 += other.m2 + delta * delta * self.count * other.count / total
        self.mean += delta * other.count / total
        self.count = total

    @property
    def std(self) -> float:
        """Population standard deviation (ddof=0)."""
        return float(np.sqrt(self.m2 / self.count)) if self.count else float("nan")


class HistogramAccumulator:
    """Mergeable fixed-bin histogram over ``[lo, hi)`` for dataset percentiles.

    Bin ``i`` holds values in ``[lo + i*w, lo + (i+1)*w)``; values below ``lo`` or at/above
    ``hi`` are counted as under/overflow. :meth:`percentile` interpolates linearly inside a
    bin, so it is within one bin width of the exact percentile of the same values.
    """

    def __init__(self, lo: float, hi: float, bin_width: float):
        if not hi > lo or not bin_width > 0:
            raise ValueError(f"histogram needs lo < hi and bin_width > 0, got [{lo}, {hi}) / {bin_width}")
        self.lo, self.hi, self.bin_width = float(lo), float(hi), float(bin_width)
        self.n_bins = int(np.ceil((self.hi - self.lo) / self.bin_width))
        self.counts = np.zeros(self.n_bins, dtype=np.int64)
        self.under = 0
        self.over = 0

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        below, above = values < self.lo, values >= self.hi
        self.under += int(below.sum())
        self.over += int(above.sum())
        inside = values[~(below | above)]
        index = np.minimum(((inside - self.lo) / self.bin_width).astype(np.int64), self.n_bins - 1)
        self.counts += np.bincount(index, minlength=self.n_bins)

    def merge(self, other: HistogramAccumulator) -> None:
        if (other.lo, other.hi, other.bin_width) != (self.lo, self.hi, self.bin_width):
            raise ValueError("cannot merge histograms with different ranges or bin widths")
        self.counts += other.counts
        self.under += other.under
        self.over += other.over

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.under + self.over

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0..100) of every value seen.

        Raises:
            ValueError: no value seen, or the percentile falls below ``lo`` / above ``hi``
                (widen the histogram range).
        """
        total = self.total
        if total == 0:
            raise ValueError("no value was accumulated")
        if not 0 <= q <= 100:
            raise ValueError(f"percentile must be in [0, 100], got {q}")
        rank = q / 100.0 * total
        if self.under and rank <= self.under:
            raise ValueError(
                f"percentile {q} lies below the histogram range start {self.lo} "
                f"({self.under} of {total} values are below it): widen the histogram range"
            )
        if self.over and rank > total - self.over:
            raise ValueError(
                f"percentile {q} lies at or above the histogram range end {self.hi} "
                f"({self.over} of {total} values are at or above it): widen the histogram range"
            )
        if not self.counts.any():
            raise ValueError(f"no value inside the histogram range [{self.lo}, {self.hi})")
        cumulative = self.under + np.concatenate([[0], np.cumsum(self.counts)])
        # first bin whose upper cumulative count reaches the rank, skipping empty bins
        i = int(np.searchsorted(cumulative[1:], rank, side="left"))
        while self.counts[i] == 0:
            i += 1
        fraction = (rank - cumulative[i]) / self.counts[i]
        return float(self.lo + (i + fraction) * self.bin_width)


class StatsAccumulator:
    """Dataset statistics for one normalization, fed item by item and merged across workers.

    Usage (what the engine does for ``scope: dataset``)::

        acc = StatsAccumulator("percentile_zscore", above=-500)
        for pixels in items: acc.update(pixels)      # or one per worker, then acc.merge(other)
        stats = acc.result()                          # same keys as compute_stats()

    :meth:`to_json` / :meth:`from_json` give a small JSON-able record for workers to return.
    Percentiles come from a histogram over ``hist_range`` with ``bin_width`` (input units),
    so they are within one bin width of the exact ones; min/max/mean/std are exact.
    """

    def __init__(
        self,
        mode: str,
        *,
        above: float | None = None,
        percentiles: tuple[float, float] = (0.5, 99.5),
        hist_range: tuple[float, float] = (-1024.0, 3072.0),
        bin_width: float = 1.0,
    ):
        if mode not in STAT_MODES:
            raise ValueError(f"mode {mode!r} takes no dataset statistics; expected one of {STAT_MODES}")
        self.mode, self.above, self.percentiles = mode, above, tuple(percentiles)
        self.moments = MomentsAccumulator()
        self.min, self.max = float("inf"), float("-inf")
        self.histogram = HistogramAccumulator(hist_range[0], hist_range[1], bin_width)

    def update(self, x: np.ndarray) -> None:
        """Add one item's values (those ``> above`` when a threshold is set; none is fine)."""
        values = np.asarray(x).ravel()
        if self.above is not None:
            values = values[values > self.above]
        if values.size == 0:
            return
        self.min, self.max = min(self.min, float(values.min())), max(self.max, float(values.max()))
        for start in range(0, values.size, BLOCK):
            block = values[start : start + BLOCK]
            self.moments.update(block)
            if self.mode.startswith("percentile"):
                self.histogram.update(block)

    def merge(self, other: StatsAccumulator) -> None:
        self.moments.merge(other.moments)
        self.min, self.max = min(self.min, other.min), max(self.max, other.max)
        self.histogram.merge(other.histogram)

    def result(self) -> dict[str, float]:
        """The statistics, with the keys of :func:`compute_stats` for the same mode."""
        if self.moments.count == 0:
            where = f" above {self.above}" if self.above is not None else ""
            raise ValueError(f"no voxel{where} in the whole dataset to compute statistics on")
        if self.mode == "minmax":
            return {"min": self.min, "max": self.max}
        moments = {"mean": self.moments.mean, "std": self.moments.std, "count": self.moments.count}
        if self.mode == "zscore":
            return moments
        low, high = self.percentiles
        return {"lower": self.histogram.percentile(low), "upper": self.histogram.percentile(high), **moments}

    def to_json(self) -> dict[str, Any]:
        h = self.histogram
        return {
            "mode": self.mode,
            "above": self.above,
            "percentiles": list(self.percentiles),
            "hist_range": [h.lo, h.hi],
            "bin_width": h.bin_width,
            "moments": [self.moments.count, self.moments.mean, self.moments.m2],
            "min": self.min if np.isfinite(self.min) else None,
            "max": self.max if np.isfinite(self.max) else None,
            # sparse counts keep the record small
            "hist": {str(i): int(c) for i, c in enumerate(h.counts) if c},
            "under": h.under,
            "over": h.over,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatsAccumulator:
        acc = cls(
            data["mode"],
            above=data["above"],
            percentiles=tuple(data["percentiles"]),
            hist_range=tuple(data["hist_range"]),
            bin_width=data["bin_width"],
        )
        acc.moments = MomentsAccumulator(*data["moments"])
        acc.min = float("inf") if data["min"] is None else float(data["min"])
        acc.max = float("-inf") if data["max"] is None else float(data["max"])
        for i, count in data["hist"].items():
            acc.histogram.counts[int(i)] = count
        acc.histogram.under, acc.histogram.over = data["under"], data["over"]
        return acc


def otsu_threshold(x: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``x`` (any shape, any real dtype; NaN ignored): the value that maximizes
    the between-class variance of a ``bins``-bin histogram over ``[min, max]`` (Otsu 1979).

    Voxels strictly above the returned value are the foreground. Returns the upper edge of the
    chosen bin, in ``x``'s units; a constant array returns its value (no voxel is above it).
    """
    values = np.asarray(x, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("no finite value to compute an Otsu threshold on")
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(counts)  # voxels in bins 0..k
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(counts * centres)
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    between = weight0.astype(np.float64) * weight1 * (mean0 - mean1) ** 2
    k = int(np.argmax(between[:-1])) if bins > 1 else 0
    return float(edges[k + 1])
