"""`python -m bench.stream`: a month of erasure requests under four policies (issue 13 §4).

Requests arrive over `--days` days (uniform arrival times from a seeded RNG; the month starts on a
Monday at 00:00) on three scenarios, and each policy processes them on one worker per model
(operations on a model run one at a time, as the pipeline's model lock makes them):

- tables: UCI Adult as bench.tabular builds it, the plain logistic model; record deletions of 1–5
  training rows and one revocation of the attribute `sex`.
- text: the demo corpus and the `small` char-LSTM of bench.text (the demo's 400 steps; `--cache`
  keeps the original model, which is trained once and is not part of any policy's cost); every
  request redacts every occurrence of 1–3 of the 20 secrets. As the pipeline does, a `suppress` update
  on a fast-updated model also keeps the earlier secrets of its chain (since the last exact model,
  while no audit has deleted their escrow) down, and the evidence measures them again.
- images: Fashion-MNIST, the first 800 training images, the small CNN trained 2 epochs (bench.images
  --quick); every request deletes 1–5 images.

Policies:
1. `retrain per request`: the model retrained on the corrected data for every request.
2. `retrain nightly`: the requests that arrived before 02:00 retrained at once, at 02:00.
3. `update + reference`: the fast update (`auto`) and a reference retrained per request to verify it
   (the old default); a failed verification promotes the reference.
4. `update + evidence + weekly audit`: the fast update and the reference-free evidence checks per
   request (a failed check falls back to retraining, whose model the same checks judge); every
   Sunday at 03:00 an audit retrains one model on the current data and checks the production model
   against it for every request since the last audit (a failed audit promotes the retrained model).
   Audits continue past the month until every request of the month is covered.
5. `update + evidence + audit by cadence`: the same, but the Sunday run audits only once
   `--min-requests` requests wait or the oldest waiting one is `--max-age` days old (default 30 and
   30: `unlearn audit --min-requests 30 --max-age 30` in the weekly deployment; the decision is
   tasks.audit.Cadence's own). On a month of requests its one audit often falls after the month:
   the table gives CPU both with that covering audit and within the month.
6. and 7. (run only when named: `--policies 6,7`): 4 and 5 with `unlearn audit --rebase`: an
   audit that passes promotes its retrained model too, so the next updates start from an exact
   model (their drift checks are against it) at no extra cost.

Per scenario, a second table cuts each audited policy's share into what it spent it on:
retrainings (audits and the evidence's fall-backs), updates, evidence and audit checks, and the
floor its counts set — (audits + fall-backs)/requests + mean(update + evidence)/retraining —
whatever the checks cost: weekly audits of 30 requests alone are ≥ 5/30 = 17 %.

Every training, update and check is really run, through the library and the one registry, on one
thread; its CPU time (time.process_time) is what it costs and is also how long it keeps the worker
busy on the simulated clock. Time to removal = arrival → the moment a model without the request's
data would be in production. A retraining on a data version already retrained (the same D', the same
schedule and seeds: the same model) is run once and its measured CPU time charged to every policy that
runs it; the table's notes say how many were reused. Fidelity: the final production model against
the model retrained on the final data.

Output: one table per scenario and the targets, on stdout and in bench/results/stream.md, with the
machine's load in the header. Default: 30 table, 10 text and 30 image requests over 30 days in 2
processes: text ≈ 17 min of CPU (its 10 retrainings, 72–74 s each, dominate), tables + images ≈ 6 min
in the other (measured: 33 min wall at load 5–7); `--quick`: a smoke run of a few minutes
(6/3/6 requests over 7 days, the text model trained 100 steps). `--requests images=90` runs a
busier month (three a day), `--text-people 12 --requests text=30` a busier text month (60
secrets, 2 a request on average: the demo corpus holds 20); `--image-evidence KEY=VALUE,...` and `--image-verify KEY=VALUE,...`
set the image evidence's and audit's thresholds (unlearning.images.verify), `--compare-audits`
also judges every image audit on whole sets (not charged) and reports any verdict that differs.

    python -m bench.stream [--quick] [--scenarios tables,text,images] [--seed 0] [--cache DIR]
                           [--requests tables=30,text=10,images=30] [--days 30] [--jobs 2]
                           [--image-subset 800] [--image-epochs 2] [--min-requests 30] [--max-age 30]
                           [--policies 1,2,3,4,5] [--image-evidence K=V,...] [--image-verify K=V,...]
                           [--compare-audits] [--text-people 4]

The package, read top-down: clock.py (arrival times, the schedules, one worker per model),
policies.py (the policies over any operations: `simulate`), measured.py (the real operations and
their CPU time), tables.py, text.py and images.py (each scenario's operations), report.py (the
tables, what the share is made of, the targets), options.py (the command line) and run.py (a
scenario's run and section, the processes, the results file).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see environment notes: spin-waits on 2 shared cores
