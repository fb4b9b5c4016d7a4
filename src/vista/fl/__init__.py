"""Federated learning pieces: client training/eval, aggregation, sampling, the worker runtime."""
