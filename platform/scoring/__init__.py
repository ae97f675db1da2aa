"""Stage 4, scoring: sampling at each inference budget, the checks on every prediction, per-case metrics
(``catalog`` is the one table of facts about each metric), latency timing and stored predictions."""
