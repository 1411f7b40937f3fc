"""Models: training runs, evaluation runs, scoring, comparison, blind human review.

- runs: training runs (prepare, start as a job, follow, cancel; owns wb_runs)
- eval_setup, eval_items: what an evaluation runs (model, generation settings) and on which test items
- evaluation: evaluation runs and their answers and scores (owns wb_evals and wb_eval_*)
- generator: the answer generator as a job (launch, stop, refresh, wait, resume)
- eval_scores, scoring: metrics of a run, and of two text files (`workbench score`)
- slices, compare, neighbours: reading results: per column, leaderboard, paired bootstrap, training records alike
- review, review_results, review_actions: blind review (owns wb_review*, wb_ratings), its results, back to the data
"""
