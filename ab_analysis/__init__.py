"""A/B lift statistics for the TagLLM service: a pure statistics core and a thin report layer.

Quick start (notebook)::

    import ab_analysis as ab
    report = ab.analyze(users_df, metrics="metrics.yaml", control="control", treatment="treatment")
    report.to_json("report.json"); report.to_markdown(); report.to_html("report.html")

Layers (``ls`` shows them): ``moments`` (sufficient statistics) → ``estimators`` (Welch / delta method /
CUPED) plus ``corrections``, ``srm``, ``power``, ``sequential``, ``capping`` → ``metrics`` (YAML) →
``events`` (chunked log aggregation) → ``analysis`` → ``report``/``html``/``plots`` → ``cli``. This package
imports no sibling package of the service.
"""

from __future__ import annotations

from ab_analysis.analysis import analyze, analyze_events
from ab_analysis.corrections import adjust_pvalues
from ab_analysis.errors import ABAnalysisError, InvalidArgumentError, MetricConfigError, MissingColumnError
from ab_analysis.estimators import STATUSES, Estimand, LiftResult, compare
from ab_analysis.metrics import ColumnSpec, CovariateSpec, MetricDef, default_metrics, load_metrics
from ab_analysis.moments import Moments
from ab_analysis.power import minimum_detectable_effect, power, sample_size
from ab_analysis.report import DailyLift, MetricResult, Report
from ab_analysis.sequential import SequentialResult, msprt
from ab_analysis.srm import SRMResult, srm_check

__all__ = [
    "STATUSES",
    "ABAnalysisError",
    "ColumnSpec",
    "CovariateSpec",
    "DailyLift",
    "Estimand",
    "InvalidArgumentError",
    "LiftResult",
    "MetricConfigError",
    "MetricDef",
    "MetricResult",
    "MissingColumnError",
    "Moments",
    "Report",
    "SRMResult",
    "SequentialResult",
    "adjust_pvalues",
    "analyze",
    "analyze_events",
    "compare",
    "default_metrics",
    "load_metrics",
    "minimum_detectable_effect",
    "msprt",
    "power",
    "sample_size",
    "srm_check",
]
