# Databricks notebook source
# MAGIC %md
# MAGIC # Shopmine 3 · Recommenders
# MAGIC
# MAGIC `gold.interactions` → popularity and category baselines, re-visit, implicit ALS and the item-similarity CF,
# MAGIC evaluated side by side on a time split (`ops.model_metrics`); the best model's top-N lists → `gold.recs_topn`.
# MAGIC
# MAGIC Parameters (widgets) as in notebook 1: `lake_root`, `overlay`, `conf`. Every stage runs the same entry point
# MAGIC as `spark-submit.sh`; a stage whose inputs did not change since its last run is a no-op.

# COMMAND ----------

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
for _p in (os.path.dirname(_here), os.path.join(os.path.dirname(_here), "lib")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from pyspark.sql import functions as F  # noqa: E402

from shopmine.surfaces.notebook import Notebook  # noqa: E402

nb = Notebook.open(globals(), user="")
params = nb.params

# COMMAND ----------

rec = nb.run("recommend")
print(rec["status"], f"{rec['seconds']:.1f}s", rec["message"] or "")

# COMMAND ----------

# MAGIC %md ## Offline metrics at k = 10, every model beside the baselines

# COMMAND ----------

metrics = nb.table("ops.model_metrics").where("job = 'recommend'")
latest = metrics.agg(F.max("run_id")).first()[0]
nb.show(metrics.where((F.col("run_id") == latest) & (F.col("k") == 10)).groupBy("model").pivot(
    "metric", ["precision", "recall", "ndcg", "map", "hit_rate", "coverage"]).agg(F.round(F.first("value"), 4))
        .orderBy(F.desc("ndcg")))

# COMMAND ----------

# MAGIC %md ## One user's list (the `user` widget, else the most active user)

# COMMAND ----------

recs = nb.table("gold.recs_topn")
user = params["user"] or nb.table("gold.user_features").orderBy(F.desc("n_events"), "user_id").first()["user_id"]
nb.show(recs.where(F.col("user_id") == user).join(nb.table("gold.item_features").select(
    "item_id", "category_id", "brand"), "item_id", "left").orderBy("rank"))
