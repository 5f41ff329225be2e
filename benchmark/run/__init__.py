"""A run: its configuration, plan, execution (local or Ray), producing and scoring, the feature stages, set
metrics, the row schema, results on disk and provenance."""
