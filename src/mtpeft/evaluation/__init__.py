"""Scoring: metrics and bootstrap intervals (metrics), baselines (baselines), official prediction files
(predictions) and model evaluation (evaluate). Import the submodules directly: they pull in
scikit-learn, which commands that only read the store do not need.
"""
