"""Row bookkeeping: de-duplicate parameter rows and lay out (row, observable) pairs."""

from __future__ import annotations

import numpy as np


def unique_rows(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of ``values (N, P)`` in first-appearance order and each row's index."""
    values = np.ascontiguousarray(values, dtype=float)
    count, width = values.shape
    if count == 0:
        return values, np.zeros(0, dtype=np.int64)
    if width == 0:
        return values[:1], np.zeros(count, dtype=np.int64)
    fast = _unique_by_projection(values)
    if fast is not None:
        return fast
    keys = values.view(np.dtype((np.void, width * values.itemsize))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return values[first[order]], rank[inverse.ravel()]


_PROJECTION = np.random.default_rng(20240611).standard_normal(4096) + 1.0


def _unique_by_projection(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path: group rows by a random projection, then verify the groups exactly."""
    width = values.shape[1]
    weights = np.resize(_PROJECTION, width)
    keys = values @ weights
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if not np.array_equal(values, values[first[inverse]]):  # a collision (or NaN): be exact
        return None
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return values[first[order]], rank[inverse]


def pair_layout(
    row_index: np.ndarray, obs_index: np.ndarray, num_rows: int, num_obs: int
) -> tuple[np.ndarray | None, np.ndarray]:
    """Per-row observable table for requested ``(row, observable)`` pairs.

    Returns ``(pairs, column)``: ``pairs`` is ``(R, M)`` observable indices (``-1`` = padding),
    or ``None`` when every row needs every observable (then column ``m`` is observable ``m``);
    ``column[i]`` is where pair ``i`` sits in its row.
    """
    codes = row_index.astype(np.int64) * num_obs + obs_index
    unique, inverse = np.unique(codes, return_inverse=True)
    inverse = inverse.ravel()
    if unique.size == num_rows * num_obs:
        return None, obs_index.astype(np.int64)
    rows, obs = unique // num_obs, unique % num_obs
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    columns = np.arange(unique.size) - starts[rows]
    pairs = np.full((num_rows, max(int(counts.max()), 1)), -1, dtype=np.int64)
    pairs[rows, columns] = obs
    return pairs, columns[inverse]


def index_by_identity(items) -> tuple[list, np.ndarray]:
    """Distinct objects of ``items`` (by identity, first-appearance order) and each item's index."""
    ids = list(map(id, items))
    if not ids:
        return [], np.zeros(0, dtype=np.int64)
    if ids.count(ids[0]) == len(ids):
        return [items[0]], np.zeros(len(ids), dtype=np.int64)
    count = len(ids)
    if count >= 1024:  # long lists repeat each object in runs (EstimatorQNN tiles per observable)
        array = np.fromiter(ids, dtype=np.uintp, count=count)
        starts = np.flatnonzero(np.concatenate(([True], array[1:] != array[:-1])))
        if starts.size * 8 <= count:
            position: dict[int, int] = {}
            order = []
            heads = [ids[k] for k in starts.tolist()]
            for k, head in zip(starts.tolist(), heads, strict=True):
                if head not in position:
                    position[head] = len(order)
                    order.append(k)
            runs = np.fromiter(map(position.__getitem__, heads), dtype=np.int64, count=len(heads))
            index = np.repeat(runs, np.diff(np.append(starts, count)))
            return [items[k] for k in order], index
    first = dict(zip(reversed(ids), range(count - 1, -1, -1), strict=True))  # id -> first
    order = sorted(first.values())
    position = {ids[k]: j for j, k in enumerate(order)}
    index = np.fromiter(map(position.__getitem__, ids), dtype=np.int64, count=count)
    return [items[k] for k in order], index
