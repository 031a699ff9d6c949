# Databricks notebook source
# MAGIC %md
# MAGIC # Shopmine 4 · Behaviour models
# MAGIC
# MAGIC Labels on a time split → MLlib logistic regression and naive Bayes (`train-predict`) and the Keras CNN
# MAGIC trained with Horovod on Spark (`train-cnn`), each beside a majority-class baseline; scores → `gold.propensity_scores`
# MAGIC and `gold.behaviour_predictions`; every run is also tracked in MLflow (tags `shopmine.run_id`).
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

for stage in ("train-predict", "train-cnn"):
    r = nb.run(stage)
    print(f"{stage:<14} {r['status']:<5} {r['seconds']:6.1f}s  {r['message'] or ''}")

# COMMAND ----------

# MAGIC %md ## Test metrics beside the majority baseline

# COMMAND ----------

m = nb.table("ops.model_metrics").where("job IN ('train-predict', 'train-cnn')")
latest = m.groupBy("job").agg(F.max("run_id").alias("run_id"))
nb.show(m.join(latest, ["job", "run_id"]).groupBy("model").pivot(
    "metric", ["accuracy", "roc_auc", "pr_auc", "f1", "macro_f1", "log_loss"]).agg(F.round(F.first("value"), 4))
        .orderBy("model"), 50)

# COMMAND ----------

# MAGIC %md ## What drives the purchase model: the strongest logistic-regression coefficients

# COMMAND ----------

coef = nb.table("ops.model_explanations").where("task = 'purchase' AND model = 'lr'")
nb.show(coef.orderBy(F.desc(F.abs("value"))).select("class_label", "feature", F.round("value", 4).alias("value")), 10)

# COMMAND ----------

# MAGIC %md ## Who is likely to buy in the next days

# COMMAND ----------

nb.show(nb.table("gold.propensity_scores").where("task = 'purchase' AND model = 'lr'")
        .orderBy(F.desc("score")).select("user_id", F.round("score", 4).alias("score"), "predicted"), 10)
