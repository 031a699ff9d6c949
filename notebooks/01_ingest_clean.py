# Databricks notebook source
# MAGIC %md
# MAGIC # Shopmine 1 · Ingest and clean
# MAGIC
# MAGIC Raw clickstream files → `bronze.events_raw` (every line verbatim, with file and line number) →
# MAGIC `silver.events` + `silver.quarantine` (a reason per rejected line), reconciled in `ops.clean_batches`.
# MAGIC With no `input`, the synthetic generator writes the default export first.
# MAGIC
# MAGIC Parameters (widgets): `lake_root` (empty: `lake.root` of the configuration), `overlay` (`local`, `cluster` or a
# MAGIC YAML path), `conf` (`key=value` overrides, one per line or `;`-separated), `input` (files, folders or globs,
# MAGIC comma-separated), `format` (`canonical`, `taobao`, `retailrocket`, `rees46`, `online_retail`, `jdata`,
# MAGIC `movielens`). Every stage runs the same entry point as `spark-submit.sh`.

# COMMAND ----------

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__)) if "__file__" in globals() else os.getcwd()
for _p in (os.path.dirname(_here), os.path.join(os.path.dirname(_here), "lib")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from pyspark.sql import functions as F  # noqa: E402

from shopmine.surfaces.notebook import Notebook  # noqa: E402

nb = Notebook.open(globals(), input="", format="canonical")
params = nb.params

# COMMAND ----------

# MAGIC %md ## Input: the given files, or a generated export

# COMMAND ----------

if params["input"].strip():
    inputs, fmt = [p.strip() for p in params["input"].split(",") if p.strip()], params["format"]
else:
    print(nb.run("generate"))
    inputs, fmt = [f"{nb.lake.root}/raw/generated/csv", f"{nb.lake.root}/raw/generated/json"], "canonical"
print(fmt, inputs)

# COMMAND ----------

ingested = nb.run("ingest", "--format", fmt, "--input", *inputs)
print(ingested["status"], ingested["message"] or "", f"{ingested['rows_written']:,} lines to bronze")
nb.show(nb.table("bronze.events_raw").groupBy("source_file").agg(F.count(F.lit(1)).alias("lines")))

# COMMAND ----------

# MAGIC %md ## Clean: typing, dedupe, missing values, outliers, bots — and where every line went

# COMMAND ----------

cleaned = nb.run("clean")
print(cleaned["status"], {k: v for k, v in cleaned["counts"].items() if not k.startswith("reason_")})
batches = nb.table("ops.clean_batches")
nb.show(batches.select("ingest_batch_id", "rows_in", "accepted", "quarantined", "duplicates_exact", "duplicates_near"))
unreconciled = batches.where("rows_in <> accepted + quarantined + duplicates_exact + duplicates_near").count()
assert unreconciled == 0, f"{unreconciled} batch(es) do not reconcile"

# COMMAND ----------

nb.show(nb.table("silver.quarantine").groupBy("reason").count().orderBy(F.desc("count")))
nb.show(nb.table("silver.events").groupBy("event_type").agg(F.count(F.lit(1)).alias("events"),
                                                           F.sum(F.col("is_bot").cast("int")).alias("bot_events")))
