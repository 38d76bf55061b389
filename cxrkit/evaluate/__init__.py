"""Evaluation: zero-shot, linear probe, retrieval, metrics with CIs, plots."""
