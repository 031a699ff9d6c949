"""The one evaluation package: ``ranking`` (recommender splits and top-K metrics) and ``classification`` (behaviour
predictors: ROC/PR-AUC, accuracy, precision/recall/F1 per class and macro, log-loss, calibration). Every metric is
computed with distributed aggregates; only results bounded by K, the number of classes or bins reach the driver."""
