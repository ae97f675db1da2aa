"""Stage 6, the board: leaderboards ranked from the per-case rows of the store, their statistics (paired
bootstrap CIs, Wilcoxon + Holm rank groups) and their formats (table, markdown, LaTeX, CSV, parquet, JSON).
Reads the store only; never imports torch."""
