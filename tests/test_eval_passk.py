"""pass@k: the unbiased estimator against known values and the closed form."""

from __future__ import annotations

from math import comb

import pytest

from coda_train.eval.passk import mean_pass_at_k, pass_at_k, reportable_ks


@pytest.mark.parametrize("n,c,k,expected", [
    (1, 1, 1, 1.0), (1, 0, 1, 0.0), (10, 1, 1, 0.1), (10, 5, 1, 0.5),
    (5, 2, 2, 0.7),            # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (10, 1, 10, 1.0), (10, 0, 10, 0.0), (200, 1, 100, 0.5),
    (20, 3, 10, 1 - comb(17, 10) / comb(20, 10)),
])
def test_pass_at_k_matches_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_pass_at_k_equals_closed_form_on_a_grid():
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_k_rejects_impossible_inputs():
    with pytest.raises(ValueError, match="needs at least 10 samples"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_mean_over_tasks_and_reportable_ks():
    assert mean_pass_at_k([(1, 1), (1, 0), (1, 0), (1, 1)], 1) == 0.5
    assert mean_pass_at_k([], 1) == 0.0
    assert reportable_ks(1) == [1] and reportable_ks(10) == [1, 10] and reportable_ks(200) == [1, 10, 100]
