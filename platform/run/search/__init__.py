"""The search stage: ``stage`` (run_searches, search_outcomes, search_summary) over ``plan`` (plans, records,
tuned cells), ``select`` (Pareto, selection), ``tune`` (the Ray Tune searcher, scheduler and recorder),
``store`` (its MLflow records) and ``trainable`` (one search trial). Its spec checks live in spec/search.py."""
