"""A/B lift statistics for the TagLLM service: a pure statistics core and a thin report layer.

Quick start (notebook)::

    import ab_analysis as ab
    report = ab.analyze(users_df, metrics="metrics.yaml", control="control", treatment=["a", "b"])
    report.to_json("report.json"); report.to_markdown(); report.to_html("report.html")

Layers (``ls`` shows them): ``moments`` (sufficient statistics) → ``estimators`` (Welch / delta method /
CUPED), ``quantile`` plus ``corrections``, ``srm``, ``power``, ``sequential``, ``bayes``, ``capping`` →
``metrics`` (YAML) → ``validation`` (strict inputs) → ``events`` (chunked log aggregation) → ``analysis``
→ ``verdict`` → ``report``/``markdown``/``html``/``plots`` → ``cli``. This package imports no sibling
package of the service.

The public names below are imported on first use (PEP 562), so that ``import ab_analysis.cli`` (and
``tagllm ab report --help``) does not pay for pandas, scipy or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager on purpose: the function `power` must win over the submodule of the same name.
from ab_analysis.power import minimum_detectable_effect, power, sample_size

if TYPE_CHECKING:
    from ab_analysis.analysis import analyze, analyze_events
    from ab_analysis.corrections import adjust_pvalues
    from ab_analysis.errors import (
        ABAnalysisError,
        InputFileError,
        InvalidArgumentError,
        InvalidValuesError,
        MetricConfigError,
        MissingColumnError,
    )
    from ab_analysis.estimators import STATUSES, Estimand, LiftResult, compare
    from ab_analysis.metrics import ColumnSpec, CovariateSpec, MetricDef, default_metrics, load_metrics
    from ab_analysis.moments import Moments
    from ab_analysis.report import DailyLift, DataNote, MetricResult, Report
    from ab_analysis.sequential import SequentialResult, msprt
    from ab_analysis.srm import SRMResult, srm_check

_WHERE = {
    "analyze": "analysis",
    "analyze_events": "analysis",
    "adjust_pvalues": "corrections",
    "ABAnalysisError": "errors",
    "InputFileError": "errors",
    "InvalidArgumentError": "errors",
    "InvalidValuesError": "errors",
    "MetricConfigError": "errors",
    "MissingColumnError": "errors",
    "STATUSES": "estimators",
    "Estimand": "estimators",
    "LiftResult": "estimators",
    "compare": "estimators",
    "ColumnSpec": "metrics",
    "CovariateSpec": "metrics",
    "MetricDef": "metrics",
    "default_metrics": "metrics",
    "load_metrics": "metrics",
    "Moments": "moments",
    "DailyLift": "report",
    "DataNote": "report",
    "MetricResult": "report",
    "Report": "report",
    "SequentialResult": "sequential",
    "msprt": "sequential",
    "SRMResult": "srm",
    "srm_check": "srm",
}

__all__ = [
    "STATUSES",
    "ABAnalysisError",
    "ColumnSpec",
    "CovariateSpec",
    "DailyLift",
    "DataNote",
    "Estimand",
    "InputFileError",
    "InvalidArgumentError",
    "InvalidValuesError",
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ab_analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ab_analysis.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
