"""Degenerate data → explicit status; bad arguments → errors naming the argument and the value."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ab_analysis.analysis import analyze
from ab_analysis.errors import ABAnalysisError, InvalidArgumentError, MetricConfigError, MissingColumnError
from ab_analysis.estimators import Estimand, compare
from ab_analysis.metrics import default_metrics, parse_metrics
from ab_analysis.moments import Moments
from ab_analysis.srm import srm_check

Y = Estimand("y")


def _m(xs: list[float]) -> Moments:
    return Moments.from_arrays({"y": xs})


@pytest.mark.parametrize(
    ("c", "t", "status"),
    [
        ([], [1.0, 2.0], "empty_arm"),
        ([1.0], [1.0, 2.0], "insufficient_data"),
        ([3.0, 3.0, 3.0], [3.0, 3.0], "zero_variance"),
        ([1.0, 2.0, 3.0], [2.0, 3.0, 4.0], "ok"),
    ],
)
def test_statuses(c: list[float], t: list[float], status: str) -> None:
    r = compare(_m(c), _m(t), Y)
    assert r.status == status
    if status != "ok":
        assert math.isnan(r.p_value) and r.message


def test_zero_denominator_status() -> None:
    mc = Moments.from_arrays({"n": [0.0, 0.0], "d": [0.0, 0.0]})
    mt = Moments.from_arrays({"n": [1.0, 0.0], "d": [2.0, 1.0]})
    assert compare(mc, mt, Estimand("n", "d")).status == "zero_denominator"


def _users() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    return pd.DataFrame(
        {
            "variant": np.repeat(["control", "treatment"], n // 2),
            "y": rng.normal(size=n),
            "z": np.nan,
            "seg": np.tile(["a", "b"], n // 2),
        }
    )


def test_all_nan_metric_and_constant_segment() -> None:
    df = _users()
    df.loc[df["seg"] == "b", "y"] = 1.0
    ms = parse_metrics(
        [{"name": "y", "type": "mean", "numerator": "y"}, {"name": "z", "type": "mean", "numerator": "z"}]
    )
    rep = analyze(df, ms, segments=["seg"])
    assert rep.result("z").result.status == "all_nan"
    assert rep.result("y").result.status == "ok"
    assert rep.result("y", "seg", "b").result.status == "zero_variance"
    assert math.isnan(rep.result("z").p_adjusted)
    assert '"status": "all_nan"' in rep.to_json()


def test_empty_segment_value_gives_empty_arm() -> None:
    df = _users()
    df.loc[(df["seg"] == "b") & (df["variant"] == "treatment"), "seg"] = "c"
    rep = analyze(df, parse_metrics([{"name": "y", "type": "mean", "numerator": "y"}]), segments=["seg"])
    assert rep.result("y", "seg", "c").result.status == "empty_arm"


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"correction": "bonf"}, "correction='bonf'"),
        ({"control": "ctl"}, "control='ctl'"),
        ({"treatment": "control"}, "treatment='control'"),
        ({"variant_col": "arm"}, "'arm'"),
        ({"segments": ["nope"]}, "'nope'"),
        ({"relative_ci": "fieller"}, "relative_ci='fieller'"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict, needle: str) -> None:
    ms = parse_metrics([{"name": "y", "type": "mean", "numerator": "y"}])
    with pytest.raises(ABAnalysisError) as exc:
        analyze(_users(), ms, **kwargs)
    assert needle in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_unknown_variant_lists_valid_choices() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\['control', 'treatment'\]"):
        analyze(_users(), parse_metrics([{"name": "y", "type": "mean", "numerator": "y"}]), control="ctl")


def test_missing_metric_column_names_it_and_lists_columns() -> None:
    with pytest.raises(MissingColumnError, match=r"'view_duration'.*available columns"):
        analyze(_users(), default_metrics())


def test_non_numeric_column() -> None:
    with pytest.raises(MissingColumnError, match=r"'seg'.*expected numbers"):
        analyze(_users(), parse_metrics([{"name": "s", "type": "mean", "numerator": "seg"}]))


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ({"name": "a", "type": "median", "numerator": "y"}, "type"),
        ({"name": "a", "type": "ratio", "numerator": "y"}, "needs a denominator"),
        ({"name": "a", "type": "mean", "numerator": "y", "capping": 2}, "capping=2"),
        ({"name": "a", "type": "mean", "numerator": "y", "extra": 1}, "extra"),
        ({"name": "a", "type": "mean", "numerator": {"column": "c", "events": ["view"]}}, "events"),
    ],
)
def test_bad_metric_definitions(item: dict, needle: str) -> None:
    with pytest.raises(MetricConfigError, match=needle):
        parse_metrics([item])


def test_duplicate_metric_names() -> None:
    m = {"name": "a", "type": "mean", "numerator": "y"}
    with pytest.raises(MetricConfigError, match="duplicate"):
        parse_metrics([m, m])


def test_srm_and_moments_errors() -> None:
    with pytest.raises(InvalidArgumentError, match="expected_share"):
        srm_check([10, 10], [0.5])
    assert srm_check([0, 0]).status == "insufficient_data"
    with pytest.raises(InvalidArgumentError, match="variable='x'"):
        compare(_m([1.0, 2.0]), _m([1.0, 2.0]), Estimand("x"))
    with pytest.raises(InvalidArgumentError, match="alpha=0"):
        compare(_m([1.0, 2.0]), _m([1.0, 2.0]), Y, alpha=0)


def test_capping_uses_pooled_quantile() -> None:
    df = _users()
    df.loc[0, "y"] = 1e6
    ms = parse_metrics([{"name": "y", "type": "mean", "numerator": "y", "capping": 0.99}])
    row = analyze(df, ms).result("y")
    assert row.capped_at == pytest.approx(np.quantile(df["y"], 0.99))
    assert row.result.control_mean < 1e3
