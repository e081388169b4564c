"""Points of a 2-D map that would be drawn as one dot, set apart so that every image shows.

Exact duplicates embed alike and project to the very same spot: three copies drawn as one or two dots
look like fewer images than there are. Points that (nearly) coincide are put on a small ring around
their spot, and each point says how many images share it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SAME_SPOT = 0.004  # share of the map's extent: points closer than this draw as one dot (about 2 px)
APART = 0.024  # share of the map's extent between neighbours on a ring: a dot's width apart, or more
SHARED = "images here"  # the column: how many images were at this point's spot (1 for most)


def spread_overlapping(frame: pd.DataFrame, x: str = "x", y: str = "y") -> pd.DataFrame:
    """`frame` with the points that share a spot spread on a ring around it, and a SHARED column.

    Points that stand alone keep their place. Vectorised, so a map of many thousand points costs
    milliseconds.
    """
    xs, ys = frame[x].to_numpy(dtype=float), frame[y].to_numpy(dtype=float)
    spread = frame.copy()
    if len(frame) < 2:
        spread[SHARED] = 1
        return spread
    extent = max(float(np.ptp(xs)), float(np.ptp(ys))) or 1.0
    cells = np.round(np.column_stack([xs, ys]) / (SAME_SPOT * extent)).astype(np.int64)
    _, spot, sizes = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    spot = spot.ravel()
    size = sizes[spot]
    # Each point's place on its spot's ring: its rank among the points of that spot.
    order = np.argsort(spot, kind="stable")
    first = np.searchsorted(spot[order], spot[order])
    rank = np.empty(len(spot), dtype=np.int64)
    rank[order] = np.arange(len(spot)) - first
    centre_x = (np.bincount(spot, weights=xs) / sizes)[spot]
    centre_y = (np.bincount(spot, weights=ys) / sizes)[spot]
    angle = 2 * np.pi * rank / size + np.pi / 2
    # Neighbours on a ring of m points are 2 r sin(pi / m) apart.
    radius = np.where(size > 1, APART * extent / (2 * np.sin(np.pi / np.maximum(size, 2))), 0.0)
    spread[x] = np.where(size > 1, centre_x + radius * np.cos(angle), xs)
    spread[y] = np.where(size > 1, centre_y + radius * np.sin(angle), ys)
    spread[SHARED] = size
    return spread
