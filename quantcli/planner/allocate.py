"""Allocation: choose one option per tensor minimising total distortion within a byte limit.
Pure functions of (cost, distortion) lists; nothing here reads data or knows methods."""

from __future__ import annotations

import heapq
import math
from typing import Sequence

from ..errors import ConfigError


def pareto_front(cost: Sequence[float], dist: Sequence[float]) -> list[int]:
    """Indices of points no other point beats on both cost and distortion, by increasing cost."""
    order = sorted(range(len(cost)), key=lambda i: (cost[i], dist[i], i))
    out, best = [], math.inf
    for i in order:
        if dist[i] < best:
            out.append(i)
            best = dist[i]
    return out


def lower_hull(cost: Sequence[float], dist: Sequence[float]) -> list[int]:
    """Indices of the lower convex hull of (cost, distortion), by increasing cost: along it the
    distortion saved per byte only shrinks, which is what makes greedy allocation optimal."""
    hull: list[int] = []
    for i in pareto_front(cost, dist):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (dist[b] - dist[a]) * (cost[i] - cost[b]) >= (dist[i] - dist[b]) * (cost[b] - cost[a]):
                hull.pop()  # b lies on or above the chord a-i
            else:
                break
        hull.append(i)
    return hull


class TooSmall(ConfigError):
    """Even the cheapest choice for every tensor exceeds the limit."""

    def __init__(self, need: int, limit: int):
        self.need = need
        super().__init__(f"the budget is too small: the smallest plan needs at least {need:,} bytes, the budget "
                         f"allows {limit:,}")


def allocate(costs: list[list[int]], dists: list[list[float]], limit: int, fixed: int = 0) -> tuple[list[int], int]:
    """One option index per item minimising sum of distortions with fixed + sum of costs <= limit.

    Greedy marginal-gain allocation over each item's lower convex hull (on convex hulls this
    traces the Lagrangian optimum: each step is optimal for the bytes it uses), then a fill pass
    spending what is left on the best single move to any option, hull or not. Returns (choices,
    bytes used); TooSmall when even the cheapest options do not fit.
    """
    hulls = [lower_hull(c, d) for c, d in zip(costs, dists)]
    used = fixed + sum(c[h[0]] for c, h in zip(costs, hulls))
    if used > limit:
        raise TooSmall(used, limit)
    pos = [0] * len(costs)
    heap: list[tuple[float, int]] = []

    def push(k: int) -> None:
        h = hulls[k]
        if pos[k] + 1 < len(h):
            a, b = h[pos[k]], h[pos[k] + 1]
            gain = (dists[k][a] - dists[k][b]) / max(costs[k][b] - costs[k][a], 1)
            heapq.heappush(heap, (-gain, k))

    for k in range(len(costs)):
        push(k)
    while heap:
        _, k = heapq.heappop(heap)
        step = costs[k][hulls[k][pos[k] + 1]] - costs[k][hulls[k][pos[k]]]
        if used + step <= limit:
            used += step
            pos[k] += 1
            push(k)
    cur = [hulls[k][pos[k]] for k in range(len(costs))]
    while True:  # spend what is left on the best single move, hull point or not
        best: tuple[float, int, int] | None = None
        for k in range(len(costs)):
            c0, d0 = costs[k][cur[k]], dists[k][cur[k]]
            for i, (c, d) in enumerate(zip(costs[k], dists[k])):
                if d < d0 and used - c0 + c <= limit:
                    if best is None or d0 - d > best[0]:
                        best = (d0 - d, k, i)
        if best is None:
            break
        _, k, i = best
        used += costs[k][i] - costs[k][cur[k]]
        cur[k] = i
    return cur, used
