"""Models: training runs, evaluation runs, scoring, comparison, blind human review."""
