"""Helpers of the interactions module."""

from __future__ import annotations

import numpy as np

from memberwise.recommend.interactions import _mode_by


def test_mode_by_gives_the_most_frequent_value_per_key_ties_to_the_smallest() -> None:
    # Given key 0 with values 5, 5, 2; key 1 with 7, 3 (a tie); key 2 with only -1 (unknown);
    # key 3 absent, when reduced, then 5, 3 (the smaller of the tie), -1 and -1.
    key = np.array([0, 1, 0, 2, 1, 0, -1], np.int32)
    value = np.array([5, 7, 5, -1, 3, 2, 4], np.int32)
    assert _mode_by(key, value, 4).tolist() == [5, 3, -1, -1]
