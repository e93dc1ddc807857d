"""`python -m bench.tabular`: what each unlearning method costs, and how close it gets to retraining.

Part 1 — UCI Adult (built in; ~39k training rows, d = 92 after encoding). One plain and one
certified model, each with the Hessian cache a registered version gets (H(θ*; D), its Cholesky
factor, ‖X‖₂, λmax and diag H — its cost reported apart, as the pipeline pays it at registration).
Requests: delete 1/10/100/1000 random training records, revoke `sex` and `sex`+`race`, flip 1 % of
the labels. Each method is judged against an exact retraining on D' (default tolerance) measured in
the same run, and timed against two baselines measured in the same run: the project's retraining
and scikit-learn's `LogisticRegression` warm-started from θ* on the same objective (C = 1/Λ, no
separate intercept: the encoder's bias column is regularised like every other weight) at the
loosest tolerance whose result reaches the method's own gradient residual — no speed-up rests on
a slow baseline or on a baseline stopped early. scikit-learn has no perturbation term bᵀθ, so it
is a baseline for the plain model only.

Part 2 — scaling series on seeded synthetic binary data: how retraining, second_order (cached
Cholesky / CG) and first_order grow with n, p and |Z| (record deletions).

Tables go to stdout and bench/results/tabular.md, progress to stderr; the run is logged to MLflow
(experiment "unlearnflow-bench": the markdown, the raw rows as JSON, the metrics).

    python -m bench.tabular [--quick] [--no-scaling] [--seeds N] [--threads N]

The package, read top-down: timing.py (an update's time: the median of repeats, each on a fresh
problem), sklearn_baseline.py (scikit-learn warm-started from θ*, swept over tolerances), adult.py
(part 1: the two models, the requests, every method against the exact retraining), scaling.py
(part 2: the synthetic series), formatting.py (a table's cells), report.py (the tables, the targets
and the notes) and run.py (the command line, the results files, the MLflow run).
"""
