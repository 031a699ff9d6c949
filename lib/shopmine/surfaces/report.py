"""The HTML report: one self-contained file (plotly.js embedded, no CDN) with a panel per question a reader asks of
the lake. Every panel is a Spark aggregate whose size is bounded by days, event types, buckets, segments, models or a
top-N, never by users or events; a panel whose tables do not exist yet says which job writes them.

The page records its own health for automated checks: ``<body data-charts=N data-rendered=M data-errors=[...]>``
(charts expected, charts plotly drew, JavaScript errors caught) once it has loaded.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from shopmine.io.delta import Lake
from shopmine.vocab import EVENT_TYPES, FUNNEL

log = logging.getLogger("shopmine.surfaces.report")

DURATION_BINS = [(0, 10, "< 10 s"), (10, 30, "10–30 s"), (30, 60, "30–60 s"), (60, 120, "1–2 min"),
                 (120, 300, "2–5 min"), (300, 600, "5–10 min"), (600, 1800, "10–30 min"), (1800, 3600, "30–60 min"),
                 (3600, None, "≥ 1 h")]
TOP_N = 15


@dataclass
class Panel:
    key: str
    title: str
    description: str
    figure: object | None = None  # a plotly Figure
    missing: str | None = None  # why there is no figure (which job to run)


@dataclass
class Report:
    panels: list[Panel] = field(default_factory=list)

    @property
    def charts(self) -> int:
        return sum(p.figure is not None for p in self.panels)


def panel(key: str, title: str, description: str, needs: tuple[str, ...] = ()):
    """Declare a panel: the decorated function draws its figure from the lake and only runs when every table in
    ``needs`` exists; otherwise the panel says which are missing."""
    def wrap(draw):
        def make(lake: Lake, go) -> Panel:
            p = Panel(key, title, description, missing=_need(lake, *needs))
            if p.missing is None:
                p.figure = draw(lake, go)
            return p
        make.__name__ = draw.__name__
        return make
    return wrap


def _need(lake: Lake, *names: str) -> str | None:
    absent = [n for n in names if not lake.exists(n)]
    return f"no {', '.join(absent)} yet: run the job that writes it" if absent else None


def _rows(df: DataFrame, limit: int = 5000) -> list:
    """Collect an aggregate that is bounded by construction; the limit guards against a mistake, loudly."""
    rows = df.limit(limit + 1).collect()
    if len(rows) > limit:
        raise ValueError(f"report aggregate exceeded {limit} rows: {df.columns}")
    return rows


def _latest_run(lake: Lake, job: str) -> str | None:
    if not lake.exists("ops.model_metrics"):
        return None
    row = lake.read("ops.model_metrics").where(F.col("job") == job).agg(F.max("run_id")).first()
    return row[0] if row else None


# -- panels ------------------------------------------------------------------------------------------------------


@panel("activity", "Daily activity by event type", "Events per day and type in silver.events (bots excluded).",
       needs=("silver.events",))
def activity(lake: Lake, go):
    rows = _rows(lake.read("silver.events").where("NOT is_bot").groupBy(F.to_date("event_time").alias("day"),
                                                                         "event_type").count().orderBy("day"))
    fig = go.Figure()
    for t in [t for t in EVENT_TYPES if any(r["event_type"] == t for r in rows)]:
        pts = [(r["day"], r["count"]) for r in rows if r["event_type"] == t]
        fig.add_trace(go.Scatter(x=[d for d, _ in pts], y=[n for _, n in pts], name=t, mode="lines+markers"))
    fig.update_layout(yaxis_type="log", yaxis_title="events (log scale)")
    return fig


@panel("funnel", "Conversion funnel", "Sessions (bots excluded) reaching each step: view → favourite → cart → "
                                      "purchase, from gold.sessions' deepest step.", needs=("gold.sessions",))
def funnel(lake: Lake, go):
    depth = F.array_position(F.array(*[F.lit(s) for s in FUNNEL]), F.col("funnel_step"))
    r = _rows(lake.read("gold.sessions").where("NOT is_bot").agg(
        *[F.sum((depth >= i + 1).cast("long")).alias(s) for i, s in enumerate(FUNNEL)]))[0]
    return go.Figure(go.Funnel(y=FUNNEL, x=[int(r[s] or 0) for s in FUNNEL], textinfo="value+percent initial"))


@panel("sessions", "Session length", "Sessions per duration bucket (bots excluded).", needs=("gold.sessions",))
def session_lengths(lake: Lake, go):
    bucket = F.lit(len(DURATION_BINS) - 1)
    for i, (_, hi, _) in reversed(list(enumerate(DURATION_BINS))):
        if hi is not None:
            bucket = F.when(F.col("duration_seconds") < hi, F.lit(i)).otherwise(bucket)
    rows = {r["b"]: r["count"] for r in _rows(lake.read("gold.sessions").where("NOT is_bot")
                                              .groupBy(bucket.alias("b")).count())}
    fig = go.Figure(go.Bar(x=[label for _, _, label in DURATION_BINS],
                           y=[rows.get(i, 0) for i in range(len(DURATION_BINS))]))
    fig.update_layout(xaxis_title="duration", yaxis_title="sessions")
    return fig


@panel("retention", "Weekly cohort retention", "Share of each first-activity week's users active again k weeks "
                                               "later (gold.user_daily, bots excluded).", needs=("gold.user_daily",))
def retention(lake: Lake, go):
    daily = lake.read("gold.user_daily").where("n_events > bot_events")
    week = F.date_trunc("week", "event_date").cast("date")
    active = daily.select("user_id", week.alias("week")).distinct()
    first = active.groupBy("user_id").agg(F.min("week").alias("cohort"))
    grid = active.join(first, "user_id").select(
        "cohort", (F.datediff("week", "cohort") / 7).cast("int").alias("k"), "user_id")
    rows = _rows(grid.groupBy("cohort", "k").agg(F.countDistinct("user_id").alias("users")))
    size = {r["cohort"]: r["users"] for r in rows if r["k"] == 0}
    cohorts = sorted(size)
    ks = sorted({r["k"] for r in rows})
    share = {(r["cohort"], r["k"]): r["users"] / size[r["cohort"]] for r in rows if r["cohort"] in size}
    z = [[share.get((c, k)) for k in ks] for c in cohorts]
    return go.Figure(go.Heatmap(z=z, x=[f"week +{k}" for k in ks], y=[f"{c} ({size[c]:,})" for c in cohorts],
                                colorscale="Blues", zmin=0, zmax=1, texttemplate="%{z:.0%}"))


@panel("segments", "Segments and spending power", "Users per RFM segment, split by spending-power tier "
                                                  "(gold.user_profiles).", needs=("gold.user_profiles",))
def segments(lake: Lake, go):
    rows = _rows(lake.read("gold.user_profiles").groupBy("segment", "spending_power").count())
    segs = sorted({r["segment"] for r in rows})
    fig = go.Figure()
    for tier in ["none", "low", "medium", "high", "premium"]:
        n = {r["segment"]: r["count"] for r in rows if r["spending_power"] == tier}
        if n:
            fig.add_trace(go.Bar(x=segs, y=[n.get(s, 0) for s in segs], name=tier))
    fig.update_layout(barmode="stack", yaxis_title="users")
    return fig


@panel("top", "Top categories and items", f"The {TOP_N} categories and items with the most purchases "
                                          "(gold.category_features, gold.item_features).",
       needs=("gold.category_features", "gold.item_features"))
def top_items(lake: Lake, go):
    from plotly.subplots import make_subplots

    cats = _rows(lake.read("gold.category_features").orderBy(F.desc("n_purchase"), "category_id").limit(TOP_N))
    items = _rows(lake.read("gold.item_features").orderBy(F.desc("n_purchase"), "item_id").limit(TOP_N))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("categories", "items"))
    fig.add_trace(go.Bar(y=[f"c {r['category_id']}" for r in cats][::-1], x=[r["n_purchase"] for r in cats][::-1],
                         orientation="h", name="category purchases"), 1, 1)
    fig.add_trace(go.Bar(y=[f"i {r['item_id']}" for r in items][::-1], x=[r["n_purchase"] for r in items][::-1],
                         orientation="h", name="item purchases"), 1, 2)
    fig.update_layout(showlegend=False, height=500)
    return fig


def recommenders(lake: Lake, go) -> Panel:
    p = Panel("recsys", "Recommenders against the baselines", "Offline metrics at k = 10 of the latest recommend "
                                                              "run (ops.model_metrics), every model side by side.")
    run = _latest_run(lake, "recommend")
    if run is None:
        p.missing = "no recommend run in ops.model_metrics yet: run recommend"
        return p
    rows = _rows(lake.read("ops.model_metrics").where((F.col("run_id") == run) & (F.col("k") == 10)))
    p.figure = go.Figure()
    models = sorted({r["model"] for r in rows})
    for metric in ["precision", "recall", "ndcg", "map", "hit_rate"]:
        v = {r["model"]: r["value"] for r in rows if r["metric"] == metric}
        p.figure.add_trace(go.Bar(x=models, y=[v.get(m) for m in models], name=f"{metric}@10"))
    p.figure.update_layout(barmode="group")
    return p


def behaviour(lake: Lake, go) -> list[Panel]:
    roc = Panel("roc", "Purchase propensity: ROC curves", "Test-window ROC of every binary model of the latest "
                                                          "train-predict run, beside the diagonal (chance).")
    multi = Panel("multiclass", "Next category: models against the majority baseline",
                  "Accuracy and macro-F1 of the ten-class task: MLlib models (train-predict) and the Horovod CNN "
                  "(train-cnn).")
    confusion = Panel("confusion", "Next category: confusion matrix", "Rows: true class; columns: predicted class "
                                                                      "(logistic regression, test window).")
    run = _latest_run(lake, "train-predict")
    if run is None:
        roc.missing = multi.missing = confusion.missing = "no train-predict run yet: run train-predict"
        return [roc, multi, confusion]
    metrics = lake.read("ops.model_metrics")
    rows = _rows(metrics.where((F.col("run_id") == run) & F.col("metric").isin("roc_auc", "f1")))
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance", line={"dash": "dot"}))
    for r in rows:
        if r["metric"] == "roc_auc" and r["model"].startswith("purchase.") and r["details"]:
            pts = json.loads(r["details"]).get("roc") or []
            if pts:
                fig.add_trace(go.Scatter(x=[q["fpr"] for q in pts], y=[q["tpr"] for q in pts], mode="lines",
                                         name=f"{r['model'].split('.', 1)[1]} (AUC {r['value']:.3f})"))
    fig.update_layout(xaxis_title="false positive rate", yaxis_title="true positive rate")
    roc.figure = fig
    cnn = _latest_run(lake, "train-cnn")
    runs = [run] + ([cnn] if cnn else [])
    mrows = _rows(metrics.where(F.col("run_id").isin(runs) & F.col("model").startswith("next_category.")
                                & F.col("metric").isin("accuracy", "macro_f1")))
    models = sorted({r["model"].split(".", 1)[1] for r in mrows})
    fig = go.Figure()
    for metric in ("accuracy", "macro_f1"):
        v = {r["model"].split(".", 1)[1]: r["value"] for r in mrows if r["metric"] == metric}
        fig.add_trace(go.Bar(x=models, y=[v.get(m) for m in models], name=metric))
    fig.update_layout(barmode="group", yaxis_range=[0, 1])
    multi.figure = fig if models else None
    multi.missing = None if models else "the next_category task was not trained (predict.tasks)"
    lr = _rows(metrics.where((F.col("run_id") == run) & (F.col("model") == "next_category.lr")).limit(1))
    details = json.loads(lr[0]["details"]) if lr and lr[0]["details"] else {}
    if details.get("confusion"):
        names = details.get("classes") or []
        k = len(names)
        z = [[0] * k for _ in range(k)]
        for key, n in details["confusion"].items():
            a, b = (int(x) for x in key.split(","))
            if a < k and b < k:
                z[a][b] = n
        confusion.figure = go.Figure(go.Heatmap(z=z, x=names, y=names, colorscale="Blues", texttemplate="%{z}"))
        confusion.figure.update_layout(xaxis_title="predicted", yaxis_title="true", yaxis_autorange="reversed")
    else:
        confusion.missing = "no next_category.lr model in the latest train-predict run"
    return [roc, multi, confusion]


@panel("quality", "Data quality: where every input line went", "Per clean batch: accepted, quarantined (by reason, "
                                                               "silver.quarantine) and duplicates.",
       needs=("ops.clean_batches", "silver.quarantine"))
def data_quality(lake: Lake, go):
    from plotly.subplots import make_subplots

    t = _rows(lake.read("ops.clean_batches").agg(*[F.sum(c).alias(c) for c in (
        "accepted", "quarantined", "duplicates_exact", "duplicates_near")]))[0]
    reasons = _rows(lake.read("silver.quarantine").groupBy("reason").count().orderBy(F.desc("count")))
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "domain"}, {"type": "xy"}]],
                        subplot_titles=("input lines", "quarantine by reason"))
    fig.add_trace(go.Pie(labels=["accepted", "quarantined", "exact duplicates", "near duplicates"],
                         values=[int(t[c] or 0) for c in ("accepted", "quarantined", "duplicates_exact",
                                                          "duplicates_near")], hole=0.4), 1, 1)
    fig.add_trace(go.Bar(x=[r["reason"] for r in reasons], y=[r["count"] for r in reasons], name="quarantined"),
                  1, 2)
    fig.update_layout(showlegend=False)
    return fig


@panel("monitor", "Monitoring: checks and drift", "The latest monitor run: each data-quality check on the newest "
                                                   "batches (ops.data_quality) and the population stability index of "
                                                   "each monitored column since the run before (ops.drift; 0.1 = some "
                                                   "shift, 0.25 = a real one).", needs=("ops.data_quality",))
def monitoring(lake: Lake, go):
    from plotly.subplots import make_subplots

    colour = {"pass": "#2ca02c", "warn": "#ff7f0e", "fail": "#d62728", "skipped": "#7f7f7f"}
    run = _rows(lake.read("ops.data_quality").agg(F.max("run_id")))[0][0]
    checks = _rows(lake.read("ops.data_quality").where(F.col("run_id") == run).orderBy("check_name", "subject"))
    drift = []
    if lake.exists("ops.drift"):
        last = _rows(lake.read("ops.drift").agg(F.max("run_id")))[0][0]
        drift = _rows(lake.read("ops.drift").where((F.col("run_id") == last) & F.col("psi").isNotNull())
                      .orderBy(F.desc("psi")).limit(40))
    fig = make_subplots(rows=2, cols=1, specs=[[{"type": "table"}], [{"type": "xy"}]], row_heights=[0.5, 0.5],
                        subplot_titles=(f"checks of monitor run {run}", "PSI since the previous monitor run"
                                        if drift else "PSI: none yet (the first monitor run records the baseline)"))
    fig.add_trace(go.Table(
        header={"values": ["check", "subject", "value", "bounds", "status"], "align": "left"},
        cells={"values": [[r["check_name"] for r in checks], [r["subject"] for r in checks],
                          ["" if r["value"] is None else f"{r['value']:.4g}" for r in checks],
                          [f"{'' if r['lower'] is None else r['lower']} .. {'' if r['upper'] is None else r['upper']}"
                           for r in checks], [r["status"] for r in checks]],
               "align": "left", "font": {"color": [["black"] * len(checks)] * 4
                                          + [[colour[r["status"]] for r in checks]]}},
        columnwidth=[1, 1.6, 0.6, 0.7, 0.5]), 1, 1)
    fig.add_trace(go.Bar(y=[f"{r['table_name'].split('.')[1]}.{r['column_name']}"
                            + (f" [{r['segment']}]" if r["segment"] else "") for r in drift],
                         x=[r["psi"] for r in drift], marker_color=[colour[r["status"]] for r in drift],
                         orientation="h", name="PSI"), 2, 1)
    fig.update_yaxes(autorange="reversed", automargin=True, row=2, col=1)
    fig.update_layout(height=600 + 18 * len(drift), showlegend=False)
    return fig


@panel("lineage", "Run lineage", "The latest runs of every job (ops.runs): status, time, rows, and the table "
                                 "versions each one read and wrote.", needs=("ops.runs",))
def lineage(lake: Lake, go):
    rows = _rows(lake.read("ops.runs").orderBy(F.desc("started_at")).limit(40))

    def versions(m):
        return "<br>".join(f"{k} v{v}" for k, v in sorted((m or {}).items()))

    cols = [[r["started_at"].strftime("%Y-%m-%d %H:%M:%S") for r in rows], [r["job"] for r in rows],
            [r["status"] for r in rows], [f"{r['seconds']:.1f}" for r in rows],
            [f"{r['rows_read']:,}" for r in rows], [f"{r['rows_written']:,}" for r in rows],
            [f"{r['rows_rejected']:,}" for r in rows], [versions(r["input_versions"]) for r in rows],
            [versions(r["output_versions"]) for r in rows]]
    fig = go.Figure(go.Table(
        header={"values": ["started (UTC)", "job", "status", "seconds", "read", "written", "rejected", "read tables",
                           "wrote tables"], "align": "left"},
        cells={"values": cols, "align": "left"}, columnwidth=[1.3, 1, 0.6, 0.6, 0.8, 0.8, 0.7, 2, 2]))
    fig.update_layout(height=900)
    return fig


PANELS = [activity, funnel, session_lengths, retention, segments, top_items, recommenders, behaviour, data_quality,
          monitoring, lineage]


def build(lake: Lake) -> Report:
    import plotly.graph_objects as go

    report = Report()
    for make in PANELS:
        out = make(lake, go)
        report.panels += out if isinstance(out, list) else [out]
    return report


_HEALTH = """<script>
window.__shopmineErrors = [];
window.addEventListener("error", function (e) { window.__shopmineErrors.push(String(e.message)); });
window.addEventListener("load", function () {
  setTimeout(function () {
    var charts = document.querySelectorAll(".plotly-graph-div");
    var drawn = 0;
    charts.forEach(function (c) { if (c.querySelector(".main-svg")) { drawn += 1; } });
    document.body.dataset.rendered = String(drawn);
    document.body.dataset.errors = JSON.stringify(window.__shopmineErrors);
    document.body.dataset.done = "1";
  }, 500);
});
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2rem; } .meta { color: #666; } section { margin: 2.5rem 0; }
.missing { color: #8a6d3b; background: #fcf8e3; padding: 0.8rem; border-radius: 4px; }
nav a { margin-right: 1rem; }
</style>"""


def render(report: Report, lake_root: str, run_id: str) -> str:
    """The report as one self-contained HTML page (plotly.js inlined once)."""
    parts, first = [], True
    for p in report.panels:
        parts.append(f'<section id="{p.key}"><h2>{html.escape(p.title)}</h2><p>{html.escape(p.description)}</p>')
        if p.figure is not None:
            p.figure.update_layout(template="plotly_white", margin={"t": 40, "l": 60, "r": 20, "b": 60})
            parts.append(p.figure.to_html(full_html=False, include_plotlyjs=first, div_id=f"chart-{p.key}",
                                          config={"displaylogo": False}))
            first = False
        else:
            parts.append(f'<p class="missing">{html.escape(p.missing or "no data")}</p>')
        parts.append("</section>")
    nav = " ".join(f'<a href="#{p.key}">{html.escape(p.title)}</a>' for p in report.panels)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Shopmine report</title>{_STYLE}'
            f"{_HEALTH}</head><body data-charts=\"{report.charts}\"><h1>Shopmine report</h1>"
            f'<p class="meta">lake {html.escape(lake_root)} · run {html.escape(run_id)} · generated {now}</p>'
            f"<nav>{nav}</nav>{''.join(parts)}</body></html>")
