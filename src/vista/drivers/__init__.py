"""Drivers: the pipeline runner functions that assemble an experiment's Tasks."""
