"""Server options: :class:`ServerConfig` (YAML keys and ``tagllm serve`` flags), :class:`Limits` (per call),
reading a YAML config file and resolving the bearer token. No grpc here.

Example::

    values = load_config("serve.yaml")                       # flat mapping, ``-`` read as ``_``
    config = ServerConfig.from_mapping({**values, "port": 0})
    token = resolve_token(config)                            # None: no auth
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from ranking.recommend.exploration import Exploration

__all__ = [
    "METHODS",
    "Limits",
    "ServerConfig",
    "load_config",
    "merge_options",
    "resolve_token",
    "resolve_write_token",
]

#: The TagLLM methods by short name (the keys of ``max_inflight``).
METHODS = ("GetNoteTags", "GetUserInterests", "Recommend", "Rank", "TagNotes")

#: Calls of one method in flight on one worker before new ones get RESOURCE_EXHAUSTED.
DEFAULT_MAX_INFLIGHT = {
    "GetNoteTags": 512,
    "GetUserInterests": 128,
    "Recommend": 16,
    "Rank": 16,
    "TagNotes": 4,
}


@dataclass(frozen=True)
class Limits:
    """Per-call limits (server options; breaking one is INVALID_ARGUMENT naming the field and limit)."""

    max_ids_per_call: int = 1000
    max_k: int = 500
    max_candidates: int = 5000
    max_top_k: int = 200
    max_notes_per_call: int = 64
    max_id_length: int = 256
    max_text_chars: int = 10_000
    max_captions: int = 16
    default_top_k: int = 20
    default_candidates: int = 300

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{f.name}: got {value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class ServerConfig:
    """Server options (YAML keys and ``tagllm serve`` flags use the same names, ``-`` for ``_``).

    Args:
        run_dir: the run (retrieval model, ranker, optional Feast store and student).
        host: bind address (default loopback only).
        port: TCP port; 0 picks a free one (see :attr:`serving.server.RunningServer.port`).
        port_file: write the bound port here (atomically) once serving.
        tls_cert, tls_key: PEM files; both or neither.
        token_file: a file holding the bearer token; else ``token``; else env ``TAGLLM_TOKEN``; else no auth.
        token: the bearer token itself (not read from YAML files: keep secrets out of configs).
        write_token_file, write_token: the token TagNotes needs (else env ``TAGLLM_WRITE_TOKEN``); it also
            grants reads. Without one TagNotes answers PERMISSION_DENIED unless ``open_writes``.
        open_writes: without a write token, let any caller that passes the read check use TagNotes
            (trusted networks, tests); ignored when a write token is set.
        metrics_port: serve Prometheus /metrics on this port (None = off; 0 = a free port).
        metrics_host: bind address of the metrics endpoint.
        grace_s: seconds in-flight calls get to finish on shutdown.
        max_message_bytes: largest request/response; larger requests get RESOURCE_EXHAUSTED.
        tags_from: where the batch notes' tags come from: ``catalog`` (the run's tag table, which the Feast
            store was materialized from; fast start), ``feast`` (read the online store at start; a note whose
            online tags differ is re-embedded so every method agrees), ``auto`` (feast when the run has a
            store). Fresh notes always come from the journal; Feast, when the run has a store, receives
            every fresh note either way.
        online, redis: the Feast online store kind (``sqlite``/``redis``) and redis ``HOST:PORT``.
        student_model: the TagNotes student model folder (default RUN/student/model).
        index_kind: ANN index (``exact``, ``ivf``, ``hnsw``, ``ivfpq``).
        use_ranker: rank with the LightGBM ranker when the run has one.
        cold_candidates: extra Recommend candidates from cold-start notes (the cold-start channel; 0 = off).
        cold_slot_every: every N-th Recommend slot goes to the best-ranked cold-start candidate (0 = off;
            the ``quota`` exploration policy).
        exploration: how fresh and little-shown notes earn Recommend/Rank slots: ``none``, ``quota`` (needs
            ``cold_slot_every``), ``ucb`` or ``thompson`` (a Beta posterior around the ranker's click
            probability, narrowing with the note's impressions; see :mod:`ranking.recommend.exploration`).
        exploration_prior_impressions: ``ucb``/``thompson``: impressions' worth of evidence in the ranker's
            estimate for a note never shown (n0; larger = less exploration).
        exploration_ucb_beta: ``ucb``: the bonus in posterior standard deviations.
        exploration_seed: ``thompson``: the seed of the draws.
        workers: server processes sharing the port (SO_REUSEPORT), each with its own copy of the models;
            fresh notes reach the other workers through the journal within ``journal_poll_s``.
        offload: run Recommend, Rank and user-interest misses on a worker thread, off the event loop
            (False: the pre-0.15 behaviour, everything on the loop; kept for benchmarks).
        max_inflight: per method (short name), calls in flight on one worker before new ones get
            RESOURCE_EXHAUSTED; missing methods keep their default.
        journal: the TagNotes journal (default RUN/serving/tagnotes.journal).
        journal_poll_s: how often a worker reads notes other workers appended to the journal.
        switch_interval_ms: the interpreter's GIL switch interval in the server process (Python's default
            is 5 ms; see :func:`serving.server.start_server`).
        limits: per-call limits (YAML: the :class:`Limits` field names at top level).
    """

    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    port_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    write_token_file: Path | None = None
    write_token: str | None = field(default=None, repr=False)
    open_writes: bool = False
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    grace_s: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    tags_from: str = "catalog"
    online: str = "sqlite"
    redis: str | None = None
    student_model: Path | None = None
    index_kind: str = "exact"
    use_ranker: bool = True
    cold_candidates: int = 0
    cold_slot_every: int = 0
    exploration: str = "none"
    exploration_prior_impressions: float = 20.0
    exploration_ucb_beta: float = 1.0
    exploration_seed: int = 0
    workers: int = 1
    offload: bool = True
    max_inflight: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_MAX_INFLIGHT))
    journal: Path | None = None
    journal_poll_s: float = 0.1
    switch_interval_ms: float = 0.1
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.tags_from not in ("auto", "feast", "catalog"):
            raise ConfigError(f"tags_from: got {self.tags_from!r}; expected auto, feast or catalog")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: got {self.port}; expected 0..65535 (0 = pick a free port)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: got {self.metrics_port}; expected 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert, tls_key: got only one; expected both PEM files (or neither)")
        if self.grace_s < 0:
            raise ConfigError(f"grace_s: got {self.grace_s}; expected seconds >= 0")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes: got {self.max_message_bytes}; expected >= 1024")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= 64:
            raise ConfigError(f"workers: got {self.workers!r}; expected an integer in 1..64")
        if not isinstance(self.journal_poll_s, int | float) or not 0.001 <= self.journal_poll_s <= 60:
            raise ConfigError(f"journal_poll_s: got {self.journal_poll_s!r}; expected seconds in 0.001..60")
        ms = self.switch_interval_ms
        if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0.05 <= ms <= 50:
            raise ConfigError(f"switch_interval_ms: got {ms!r}; expected milliseconds in 0.05..50")
        for name in ("open_writes", "offload", "use_ranker"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected true or false")
        object.__setattr__(self, "max_inflight", _inflight(self.max_inflight))
        self.exploration_policy()

    def exploration_policy(self) -> Exploration:
        """The recommender's :class:`~ranking.recommend.exploration.Exploration` from ``exploration``,
        its parameters and ``cold_slot_every`` (alone, a quota as before).

        Raises:
            ConfigError: a bad policy or parameter, ``quota`` without ``cold_slot_every``, or
                ``cold_slot_every`` with ``ucb``/``thompson``.
        """
        from ranking.recommend.exploration import Exploration

        policy, every = self.exploration, self.cold_slot_every
        if policy == "quota" and not every:
            raise ConfigError(
                f"cold_slot_every: got {every!r} with exploration 'quota'; expected an integer >= 1 "
                "(--cold-slot-every N)"
            )
        if policy in ("ucb", "thompson") and every:
            raise ConfigError(
                f"cold_slot_every: got {every!r} with exploration {policy!r}; expected 0 (the fresh-note "
                "quota is its own policy: --exploration quota)"
            )
        return Exploration(
            "quota" if every and policy in ("none", "quota") else policy,
            slot_every=every if policy in ("none", "quota") else 0,
            prior_impressions=self.exploration_prior_impressions,
            ucb_beta=self.exploration_ucb_beta,
            seed=self.exploration_seed,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServerConfig:
        """Build from flat keys (config file + flags); limit keys go into :class:`Limits`.

        Raises:
            ConfigError: an unknown key (listing the valid ones) or a bad value.
        """
        own = {f.name for f in fields(cls)} - {"limits"}
        lim = {f.name for f in fields(Limits)}
        unknown = sorted(set(values) - own - lim)
        if unknown:
            raise ConfigError(f"config: unknown key(s) {unknown}; expected some of {sorted(own | lim)}")
        kwargs = {k: v for k, v in values.items() if k in own and v is not None}
        if "run_dir" not in kwargs:
            raise ConfigError("run_dir: required; expected the run directory (--run RUN_DIR)")
        for key in (
            "run_dir",
            "port_file",
            "tls_cert",
            "tls_key",
            "token_file",
            "write_token_file",
            "student_model",
            "journal",
        ):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        kwargs["limits"] = Limits(**{k: v for k, v in values.items() if k in lim and v is not None})
        return cls(**kwargs)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML config file as a flat mapping (``-`` in keys read as ``_``).

    Raises:
        NotFoundError: no such file; ConfigError: not a YAML mapping, or it holds a token.
    """
    import yaml

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"--config {p}: no such file")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {p}: expected a YAML mapping of option: value, got {type(data).__name__}"
        )
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    for secret, instead in (("token", "token_file or TAGLLM_TOKEN"), ("write_token", "write_token_file")):
        if secret in out:
            raise ConfigError(f"--config {p}: {secret!r} is not read from config files; use {instead}")
    return out


def _inflight(values: Mapping[str, int]) -> dict[str, int]:
    """``max_inflight`` over the defaults; ConfigError naming an unknown method or a bad count."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"max_inflight: got {values!r}; expected a mapping of method name -> count")
    unknown = sorted(set(values) - set(METHODS))
    if unknown:
        raise ConfigError(f"max_inflight: unknown method(s) {unknown}; expected some of {list(METHODS)}")
    out = dict(DEFAULT_MAX_INFLIGHT)
    for name, n in values.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"max_inflight.{name}: got {n!r}; expected an integer >= 1")
        out[name] = n
    return out


def _read_token(key: str, path: Path) -> str:
    if not path.exists():
        raise NotFoundError(f"{key}: {path} does not exist")
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(f"{key}: {path} is empty; expected one line with the token")
    return token


def resolve_token(config: ServerConfig) -> str | None:
    """The bearer token: token_file, else ``token``, else env TAGLLM_TOKEN, else None (no auth)."""
    if config.token_file is not None:
        return _read_token("token_file", config.token_file)
    return config.token or os.environ.get("TAGLLM_TOKEN") or None


def resolve_write_token(config: ServerConfig) -> str | None:
    """The write token (TagNotes): write_token_file, else ``write_token``, else env TAGLLM_WRITE_TOKEN."""
    if config.write_token_file is not None:
        return _read_token("write_token_file", config.write_token_file)
    return config.write_token or os.environ.get("TAGLLM_WRITE_TOKEN") or None


def merge_options(
    run_dir: str | os.PathLike[str] | None, config: ServerConfig | None, options: Mapping[str, Any]
) -> ServerConfig:
    """``config`` with ``run_dir`` and ``options`` (ServerConfig or Limits field names) applied.

    Raises:
        ConfigError: an unknown option name or a bad value.
    """
    if config is None:
        return ServerConfig.from_mapping({"run_dir": run_dir, **options})
    lim = {f.name for f in fields(Limits)}
    limits = replace(config.limits, **{k: v for k, v in options.items() if k in lim})
    own = {k: v for k, v in options.items() if k not in lim}
    if run_dir is not None:
        own["run_dir"] = Path(run_dir)
    try:
        return replace(config, limits=limits, **own)
    except TypeError as exc:
        raise ConfigError(f"start_server: {exc}; expected ServerConfig or Limits field names") from exc
