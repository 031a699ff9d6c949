# Databricks notebook source
# MAGIC %md
# MAGIC # Shopmine 2 · Sessions, features and user profiles
# MAGIC
# MAGIC `silver.events` → `gold.sessions` → per-day tables → `gold.interactions` (time-decayed strength), user / item /
# MAGIC category features and the fitted feature pipeline → `gold.user_profiles` (interests, RFM segment, lifecycle).
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

nb = Notebook.open(globals())
params = nb.params

# COMMAND ----------

for stage in ("sessionize", "featurize", "profile"):
    r = nb.run(stage)
    print(f"{stage:<11} {r['status']:<5} {r['seconds']:6.1f}s  {r['message'] or ''}")

# COMMAND ----------

# MAGIC %md ## Sessions and the conversion funnel

# COMMAND ----------

sessions = nb.table("gold.sessions").where("NOT is_bot")
nb.show(sessions.groupBy("funnel_step").agg(F.count(F.lit(1)).alias("sessions"),
                                            F.round(F.avg("duration_seconds"), 1).alias("avg_seconds"))
        .orderBy(F.desc("sessions")))

# COMMAND ----------

# MAGIC %md ## Profiles: segments, spending power, lifecycle

# COMMAND ----------

profiles = nb.table("gold.user_profiles")
nb.show(profiles.groupBy("segment", "spending_power").count().orderBy("segment", "spending_power"), 50)
nb.show(profiles.groupBy("lifecycle_stage").count())
nb.show(profiles.orderBy(F.desc("monetary")).select("user_id", "segment", "spending_power", "top_categories"), 5)
