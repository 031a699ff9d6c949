"""What every recommender is: ``Recommender.fit(train, ctx) -> Fitted``, ``Fitted.recommend(users, n, exclude) ->
(user_id, item_id, score, rank)``. ``recommend`` (recsys/run.py) only knows this interface: it fits and evaluates each
configured model on the split, picks one, refits it on everything and writes its lists.

A model learns from a :class:`Training`: interactions folded from events before ``cutoff`` and, on a time split, the
per-day rows before it (the ranker's rolling cutoffs need days). ``Context`` is one ``recommend`` run's shared state:
the settings, and frames several models reuse (the item neighbours of the item-CF variants, the ranker's per-cutoff
candidates), released at the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Callable, ClassVar

from pyspark.sql import DataFrame
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from shopmine.conf import Settings
from shopmine.evaluation import ranking as ev


@dataclass(frozen=True)
class Served:
    """The lists served before this run, for ``recommend.served_negatives``: recs (user_id, item_id, run_id),
    cuts (run_id, cut) and the events (user_id, item_id, event_type, event_date, is_bot) after them."""

    recs: DataFrame
    cuts: DataFrame
    events: DataFrame


@dataclass(frozen=True, eq=False)   # eq=False: hashed by identity, so a Context can key its shared frames on it
class Training:
    """What a model may learn from.

    ``inter``: gold.interactions-like rows (user_id, item_id, category_id, strength, rating, counts per type,
    last_event_time), folded from the training events only. ``daily``: the gold.interactions_daily rows with
    ``event_date < cutoff`` (None when the split is not a time split); ``cutoff``: the first day the model must not
    see (the first held-out day; for serving, the day after the data). ``served``: the lists served earlier, for
    models that learn from ignored recommendations."""

    inter: DataFrame
    daily: DataFrame | None = None
    cutoff: date | None = None
    served: Served | None = None

    @classmethod
    def before(cls, inter: DataFrame, daily: DataFrame, cutoff: date | None, served: Served | None = None
               ) -> "Training":
        """``inter`` with the per-day rows strictly before ``cutoff`` (none: not a time split)."""
        if cutoff is None:
            return cls(inter, None, None, served)
        return cls(inter, daily.where(F.col("event_date") < F.lit(cutoff)), cutoff, served)

    @property
    def last_day(self) -> date | None:
        return self.cutoff - timedelta(days=1) if self.cutoff is not None else None


@dataclass
class Context:
    """One ``recommend`` run: the session, the settings, and frames shared between models (persisted once)."""

    spark: SparkSession
    settings: Settings
    _shared: dict = field(default_factory=dict)

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """The value stored under ``key``, made (and kept) the first time it is asked for. A DataFrame is persisted."""
        if key not in self._shared:
            value = make()
            self._shared[key] = value.persist() if isinstance(value, DataFrame) else value
        return self._shared[key]

    def release(self) -> None:
        for value in self._shared.values():
            for df in (value.values() if isinstance(value, dict) else [value]):
                if isinstance(df, DataFrame):
                    df.unpersist()
        self._shared.clear()


class Fitted:
    """A model fitted on one :class:`Training`. Subclasses implement :meth:`scores` (any number of scored candidates
    per user, excluded items removed) or override :meth:`recommend`; ``details`` go to ops.model_metrics."""

    details: dict
    explanations: list[tuple[str, float, str]]   # (feature, value, kind) for ops.model_explanations

    def __init__(self, details: dict | None = None) -> None:
        self.details = details or {}
        self.explanations = []

    def scores(self, n: int, exclude: DataFrame | None) -> DataFrame:
        raise NotImplementedError

    def recommend(self, users: DataFrame | None, n: int, exclude: DataFrame | None) -> DataFrame:
        """The top ``n`` (user_id, item_id, score, rank) of each user of ``users`` (None: every user the model
        can score), no pair of ``exclude`` among them."""
        recs = self.scores(n, exclude)
        if users is not None:
            recs = recs.join(users.select("user_id").distinct(), "user_id", "left_semi")
        return ev.top_k(recs, n).select("user_id", "item_id", "score", "rank")

    def diagnostics(self, truth: DataFrame, k: int) -> dict[str, float]:
        """Extra evaluation metrics of this model on the held-out pairs (name@k -> value); none by default."""
        return {}


class Recommender:
    """A model by name. ``fit`` learns from a :class:`Training`; ``refit`` fits again on all the data for serving,
    keeping what was chosen on the split (tuned hyper-parameters); by default it is a plain ``fit``."""

    name: ClassVar[str] = ""
    needs_time_split: ClassVar[bool] = False   # fits on per-day rows before a cutoff (recommend.split: time)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def fit(self, train: Training, ctx: Context) -> Fitted:
        raise NotImplementedError

    def refit(self, fitted: Fitted, train: Training, ctx: Context) -> Fitted:
        return self.fit(train, ctx)
