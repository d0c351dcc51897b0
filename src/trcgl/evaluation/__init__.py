"""Evaluation of multi-label classifiers: ranking and threshold metrics (see ``metrics``)."""
