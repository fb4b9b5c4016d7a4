"""Hydra config groups shipped with Vista (a package so Hydra can find them installed)."""
