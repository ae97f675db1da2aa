"""Stage 2, the run: the driver plans jobs from a suite's cells and runs them as Ray Tune trials
(``trainable``), one-worker cells inside the trial and several workers through Ray Train (``train_loop``);
progress lines and the ETA, the Ray cluster, concurrency planning; ``search/`` for the budgeted search."""
