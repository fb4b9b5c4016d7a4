"""Server-side aggregation strategies, one small module per family (see vista.fl.aggregators)."""
