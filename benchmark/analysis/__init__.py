"""Reading finished runs: curves and BD, bootstrap intervals, leaderboards, compare, plots, reports and published
references."""
