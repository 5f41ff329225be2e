"""Metrics as pure functions of pixels or of stored features; each module holds one metric."""
