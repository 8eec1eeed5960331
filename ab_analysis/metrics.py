"""Metric definitions: pydantic models loaded from YAML, and the paper's predefined set.

A metric is ``mean`` (per-user mean of a column), ``ratio`` (``sum(numerator) / sum(denominator)`` over
users, delta method) or ``quantile`` (a quantile of the per-user values, e.g. the median view duration;
see :mod:`ab_analysis.quantile`). A column spec either names a user-level column or, for event logs, also says how
to build it: which events to count (or whose ``dwell_seconds`` to sum), optionally only on cold-start notes.

YAML form::

    metrics:
      - name: pv_ctr
        type: ratio
        numerator: {column: clicks, events: [click]}
        denominator: {column: impressions, events: [impression]}
        covariate: {numerator: pre_clicks, denominator: pre_impressions}   # optional CUPED
      - name: view_duration_per_user
        type: mean
        numerator: view_duration          # shorthand for {column: view_duration}
        capping: 0.999                    # winsorize at the pooled 99.9% quantile
        kind: duration                    # plausibility: count | proportion | duration | continuous
        direction: increase               # which way is good (verdicts): increase | decrease
        guardrail: false                  # a guardrail is "violated" or "ok", never a "win"
        min_effect: 0.01                  # smallest relative lift worth detecting ("underpowered" note)
      - name: median_view_duration
        type: quantile
        quantile: 0.5
        numerator: view_duration

Value kinds (the plausibility check run on every input row; NaN is allowed and drops the row for that
metric, ±inf is always an error):

* ``count``: every column ≥ 0; ``duration``: every column ≥ 0 (seconds);
* ``proportion``: a mean metric's values in [0, 1]; a ratio metric's numerator and denominator ≥ 0 with
  ``numerator <= denominator`` per user (e.g. clicks ≤ impressions, so the per-user CTR ≤ 1);
* ``continuous``: any finite value.

When ``kind`` is omitted it follows the event recipe (``value: dwell_seconds`` → duration, counted
events → count) and is ``continuous`` for a column without a recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ab_analysis.errors import MetricConfigError

__all__ = [
    "EVENT_TYPES",
    "VALUE_KINDS",
    "ColumnSpec",
    "CovariateSpec",
    "MetricDef",
    "default_metrics",
    "load_metrics",
    "parse_metrics",
]

EVENT_TYPES = ("impression", "click", "like", "collect", "comment", "share")
VALUE_KINDS = ("count", "proportion", "duration", "continuous")


class ColumnSpec(BaseModel):
    """A user-level column, optionally with the recipe that builds it from an event log.

    Args:
        column: name of the user-level column.
        events: event types aggregated into it (``None``: the column must exist in the user table).
        value: ``count`` events or sum their ``dwell_seconds``.
        cold_start: ``True`` only events on cold-start notes, ``False`` only others, ``None`` all.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    events: tuple[Literal["impression", "click", "like", "collect", "comment", "share"], ...] | None = None
    value: Literal["count", "dwell_seconds"] = "count"
    cold_start: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"column": data} if isinstance(data, str) else data


class CovariateSpec(BaseModel):
    """CUPED covariate: a pre-period column (mean metrics) or a pre-period ratio (ratio metrics)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    numerator: str
    denominator: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"numerator": data} if isinstance(data, str) else data


class MetricDef(BaseModel):
    """One metric: name, type, columns, optional capping quantile and CUPED covariate, value kind,
    good direction and guardrail flag (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    type: Literal["mean", "ratio", "quantile"]
    numerator: ColumnSpec
    denominator: ColumnSpec | None = None
    capping: float | None = None
    covariate: CovariateSpec | None = None
    kind: Literal["count", "proportion", "duration", "continuous"] | None = None
    direction: Literal["increase", "decrease"] = "increase"
    guardrail: bool = False
    quantile: float | None = None
    min_effect: float | None = None

    @property
    def value_kind(self) -> str:
        """The declared ``kind``, else the one implied by the event recipe (module docstring)."""
        if self.kind is not None:
            return self.kind
        if self.numerator.events is None:
            return "continuous"
        return "duration" if self.numerator.value == "dwell_seconds" else "count"

    @field_validator("capping")
    @classmethod
    def _capping(cls, v: float | None) -> float | None:
        if v is not None and not 0.5 < v < 1.0:
            raise ValueError(f"capping={v!r}: expected a quantile in (0.5, 1), e.g. 0.999")
        return v

    @model_validator(mode="after")
    def _shape(self) -> MetricDef:
        if self.type == "ratio" and self.denominator is None:
            raise ValueError(f"metric {self.name!r}: type 'ratio' needs a denominator")
        if self.type == "mean" and self.denominator is not None:
            raise ValueError(f"metric {self.name!r}: type 'mean' takes no denominator (use type: ratio)")
        if self.type == "ratio" and self.capping is not None:
            raise ValueError(f"metric {self.name!r}: capping applies to mean metrics only")
        if self.type == "quantile":
            if self.quantile is None or not 0 < self.quantile < 1:
                raise ValueError(
                    f"metric {self.name!r}: type 'quantile' needs quantile in (0, 1), e.g. 0.5 "
                    f"(got {self.quantile!r})"
                )
            if self.denominator is not None or self.covariate is not None or self.capping is not None:
                raise ValueError(
                    f"metric {self.name!r}: type 'quantile' takes no denominator, covariate or capping"
                )
        elif self.quantile is not None:
            raise ValueError(f"metric {self.name!r}: 'quantile' applies to type 'quantile' only")
        if self.min_effect is not None and not (self.min_effect > 0):
            raise ValueError(f"metric {self.name!r}: min_effect must be a positive relative lift, e.g. 0.01")
        return self

    def columns(self) -> list[ColumnSpec]:
        """Column specs this metric reads (numerator, then denominator)."""
        return [c for c in (self.numerator, self.denominator) if c is not None]


def parse_metrics(data: Any, source: str = "metrics") -> list[MetricDef]:
    """Validate a parsed YAML document (``{"metrics": [...]}`` or a bare list).

    Raises:
        MetricConfigError: naming the source, the metric position and the offending field.
    """
    items = data.get("metrics") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise MetricConfigError(
            f"{source}: expected a non-empty list under 'metrics', got {type(items).__name__}"
        )
    out: list[MetricDef] = []
    for i, item in enumerate(items):
        try:
            out.append(MetricDef.model_validate(item))
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            )
            raise MetricConfigError(f"{source}: metric #{i}: {errs}") from None
    names = [m.name for m in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MetricConfigError(f"{source}: duplicate metric names {dup!r}: expected unique names")
    return out


def load_metrics(path: str | Path) -> list[MetricDef]:
    """Load metric definitions from a YAML file.

    Raises:
        MetricConfigError: unreadable file, invalid YAML or an invalid definition.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MetricConfigError(f"metrics file {str(p)!r}: cannot read YAML ({exc})") from None
    return parse_metrics(data, source=str(p))


def default_metrics() -> list[MetricDef]:
    """The paper's metrics: view_duration_per_user, interactions_per_user, pv_ctr, pv_ctr_cold_start."""
    # A plain path (not importlib.resources): works for a namespace-imported package too.
    text = (Path(__file__).parent / "default_metrics.yaml").read_text(encoding="utf-8")
    return parse_metrics(yaml.safe_load(text), source="ab_analysis/default_metrics.yaml")
