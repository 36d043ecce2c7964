"""The benchmark runner's parts: study configurations, runs, floors, tables."""
