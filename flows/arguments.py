"""The `unlearn` command line's parser: every command, its options and their help, and the checks
of options that argparse cannot make (a device, a verification mode, a settings object built from
options: pydantic's errors as one line naming each option). The commands themselves are flows/cli.py's
and its command modules' (train_cli.py, erasure_cli.py, demo_cli.py, compliance_cli.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows import compliance_cli
from flows.compliance_cli import JSON_HELP
from flows.numbers import positive_whole_number, real_number, whole_number
from flows.parser import Parser
from flows.settings import DEMO_TEXT_STEPS
from unlearning.errors import UnlearnError

MLFLOW_UI_PORT, PREFECT_UI_PORT = 5000, 4200
KEEP_HELP = ("keep the superseded model versions and data \"beyond use\" (no alias, tagged with a purge date) "
             "for DAYS days instead of purging them now; a later `unlearn comply` purges them when due "
             "(default: UNLEARN_KEEP_SUPERSEDED_DAYS, else 0)")


class VersionAction(argparse.Action):
    """`--version`: the package version and the commit of the code (looked up only when asked)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from tasks.version import code_version

        release, _, commit = code_version().partition("+")
        print(f"unlearn (unlearnflow) {release}" + (f", commit {commit}" if commit else ", no git commit "
                                                    "(installed from a package)"))
        parser.exit()


def build_parser(model_import) -> argparse.ArgumentParser:
    """The whole command line; `model_import`: the command `unlearn model import` runs."""
    parser = Parser(prog="unlearn", description="Machine unlearning pipeline: DVC data, "
                    "certified influence updates, Prefect flows, MLflow lineage.")
    parser.add_argument("--version", action=VersionAction, help="print the unlearnflow version and the git commit "
                        "of its code, then exit")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    add_train_parser(sub)
    add_forget_parser(sub)
    add_scan_parser(sub)
    add_demo_parser(sub)
    add_ui_parser(sub)
    add_comply_parser(sub)
    add_audit_parser(sub)
    compliance_cli.add_parsers(sub, model_import=model_import)
    return parser


def add_data_parser(sub) -> None:
    """`unlearn data add`: a table, a text file, images or a built-in."""
    data = sub.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True)
    add = data.add_parser("add", help="ingest a CSV/Parquet table, a text file, an image folder or .npz (or a built-in "
                          "dataset) into data/NAME and version it")
    add.add_argument("name", help="dataset name (lower-case letters, digits, '_', '-'; at most 64 characters); "
                     "without --file/--images a built-in dataset (adult, shakespeare, fashion-mnist, digits)")
    add.add_argument("--file", type=Path, help="file to ingest: a table (.csv/.parquet with --target), a text "
                     "corpus (.txt: one record per paragraph; .jsonl, or .csv/.parquet with --text-column) or an .npz "
                     "of images (arrays x, y, optional ids)")
    add.add_argument("--images", type=Path, metavar="DIR", help="a folder of PNG/JPEG images, one sub-folder per "
                     "class; record ids are paths such as cat/0001.png")
    add.add_argument("--size", type=whole_number, help="--images: side in pixels the images are centre-cropped and "
                     "resized to, in grey (default 28; 16 or less trains the tiny CNN)")
    add.add_argument("--target", help="label column of a table (required with a .csv/.parquet table)")
    add.add_argument("--text-column", help="the column holding the text: makes a .csv/.parquet file a text corpus "
                     "(default for .jsonl: text)")
    add.add_argument("--id", dest="id_column", help="record-id column (default: ids assigned at ingest: 0, 1, ... "
                     "for tables; r00001, r00002, ... for text rows)")
    add.add_argument("--replace", action="store_true",
                     help="overwrite an existing, different data/NAME (a table holding records that completed "
                          "ledger requests erased is refused: drop those rows)")
    add.add_argument("--json", action="store_true", help=JSON_HELP)


def add_train_parser(sub) -> None:
    """`unlearn train`: one set of options for every kind (each option names the kinds it applies to)."""
    train = sub.add_parser("train", help="train a model on a dataset and register it as production")
    train.add_argument("dataset", help="dataset name (data/NAME, see `unlearn data add`)")
    train.add_argument("--model", help="registered model name (default: the dataset name)")
    train.add_argument("--certified", action="store_true", help="objective perturbation for (ε, δ)-certified removal")
    train.add_argument("--lam", type=real_number, default=1e-3, help="L2 weight per training row (default 1e-3)")
    train.add_argument("--epsilon", type=real_number, default=1.0, help="certified ε target (default 1)")
    train.add_argument("--delta", type=real_number, default=1e-5, help="certified δ (default 1e-5)")
    train.add_argument("--budget", type=real_number, default=10.0, help="total residual bound removals may use (default 10)")
    train.add_argument("--seed", type=whole_number, default=0, help="random seed of the initialisation and the "
                       "batches (default 0); a certified table model's noise is drawn from the OS, never from it")
    train.add_argument("--preset", choices=["tiny", "small"], default=None,
                       help="text models: size (default small); image CNNs: default tiny for digits, small otherwise")
    train.add_argument("--seconds", type=real_number, default=None, help="the character LM: training time budget (default "
                       "120)")
    train.add_argument("--steps", type=whole_number, default=None, help="text models: a fixed number of training steps instead "
                       "of a time budget (default with --from-pretrained: 200 fine-tuning steps)")
    train.add_argument("--from-pretrained", type=Path, metavar="DIR", help="text datasets: fine-tune this local "
                       "Hugging Face causal-LM checkpoint (config.json, weights, tokenizer; nothing is downloaded) "
                       "instead of training the character LM; its path and content hash go into the lineage")
    train.add_argument("--lora", action="store_true", help="with --from-pretrained: fine-tune LoRA adapters only "
                       "(needs peft: pip install 'unlearnflow[lora]')")
    train.add_argument("--subset", type=whole_number, help="image CNNs: train on the first N training images "
                       "(default: all for tiny, 10000 for small)")
    train.add_argument("--model-factory", metavar="MODULE:FUNCTION", help="images: train your own nn.Module, built "
                       "by package.module:function(n_classes, in_channels) (docs/images.md); the preset then sets "
                       "only the schedule")
    train.add_argument("--epochs", type=real_number, help="image CNNs: epochs (default: the preset's)")
    add_device_options(train, precision=True)
    train.add_argument("--json", action="store_true", help=JSON_HELP)


DEVICE_HELP = ("where a deep model (language model, CNN) computes: auto (a CUDA GPU when torch sees one, else the "
               "CPU), cpu, cuda, cuda:N or mps; a table model always runs on the CPU in float64 (default auto)")
PRECISION_HELP = ("deep models' training precision: fp32 (default; CPU results reproducible bit for bit), bf16 or "
                  "fp16 (mixed precision, fp16 on a GPU only); retraining replays the model's own precision")


def add_device_options(parser, precision: bool = False) -> None:
    """`--device` (and `--precision`), checked by `checked_device` before anything is written."""
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]|mps", help=DEVICE_HELP)
    if precision:
        parser.add_argument("--precision", default="fp32", metavar="fp32|bf16|fp16", help=PRECISION_HELP)


def checked_device(args) -> str:
    """The resolved device of `--device`/`--precision` ("cpu", "cuda:0"); one line, exit 2 for a
    device this machine lacks or a precision it cannot use."""
    from unlearning.devices import Compute

    return Compute.of(args.device, getattr(args, "precision", "fp32")).device


def checked_config(cls, **values):
    """cls(**values) from command-line options; a pydantic error becomes one UnlearnError line
    naming the option (the field name as its --flag), what is wrong and what to give instead."""
    from pydantic import ValidationError

    try:
        return cls(**values)
    except ValidationError as exc:
        raise UnlearnError(option_problems(exc, cls)) from None


_BOUNDS = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="), "less_than": ("lt", "<"),
           "less_than_equal": ("le", "<=")}


def option_problems(exc, cls=None) -> str:
    """pydantic's multi-line report (with its "for further information visit" links) as
    'option --X: problem; use …', one per failed field, on one line."""
    fields = getattr(cls, "model_fields", {})
    parts = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"])
        flag = f"--{name.replace('_', '-')}" if name else "options"
        ctx, kind, given = error.get("ctx") or {}, error["type"], error.get("input")
        if kind in _BOUNDS:
            key, sign = _BOUNDS[kind]
            annotation = getattr(fields.get(name), "annotation", None)
            whole = annotation is int or int in getattr(annotation, "__args__", ())
            number = "a whole number" if whole else "a finite number"
            problem, use = f"{given!r} is not {sign} {ctx[key]}", f"{number} {sign} {ctx[key]}"
        elif kind == "literal_error":
            problem, use = f"{given!r} is not a choice", f"one of {ctx['expected']}"
        elif kind.startswith("int_"):
            problem, use = f"{given!r} is not a whole number", "a whole number"
        elif kind.startswith("float_") or kind == "finite_number":
            problem, use = f"{given!r} is not a finite number", "a finite number"
        elif kind == "extra_forbidden":
            problem, use = "is not an option here", f"one of {', '.join(fields) or 'none'}"
        else:
            problem, use = error["msg"].removeprefix("Value error, ").replace("\n", " "), None
        default = getattr(fields.get(name), "default", None)
        hint = use or (f"the default {default!r}" if default is not None else None)
        if use and default is not None and not isinstance(default, bool):
            hint += f" (default {default!r})"
        parts.append(f"option {flag}: {problem}" + (f"; use {hint}" if hint else ""))
    return "; ".join(dict.fromkeys(parts)) or "invalid options"


def add_forget_parser(sub) -> None:
    """`unlearn forget REQUEST`."""
    forget = sub.add_parser("forget", help="process an erasure request (YAML or JSON file)")
    forget.add_argument("request", type=Path, help="the erasure request file (YAML or JSON; see docs/forget.md)")
    forget.add_argument("--method", help="override the request's method: auto, or a method registered for the "
                        "model's kind, e.g. second_order (tables), finetune (text), alignment (images); an unknown "
                        "name is refused with the valid ones")
    forget.add_argument("--keep-superseded", metavar="DAYS", help=KEEP_HELP)
    add_verify_option(forget)
    add_device_options(forget)
    forget.add_argument("--json", action="store_true", help=JSON_HELP)
    add_local_option(forget)


def add_local_option(parser) -> None:
    """`--local`: run here even where `unlearn serve` runs (flows/service.py)."""
    parser.add_argument("--local", action="store_true", help="run the command in this process even when "
                        "`unlearn serve` runs for the project (by default the CLI hands it to the service's warm "
                        "process over .unlearn/service.sock; UNLEARN_SERVICE=off does the same as --local)")


VERIFY_HELP = ("how the update is verified: certificate (a certified table model: the certificate is the proof), "
               "evidence (tests that train no model) or reference (against a model retrained on the corrected "
               "data: the slow, old way); default: certificate where the model and method allow it, else evidence")


def add_verify_option(parser) -> None:
    """`--verify MODE` (tasks.kinds.base.VERIFY_MODES), checked by `checked_verify_mode` before
    anything is written: one line naming the valid modes (argparse's `choices` prints the usage too)."""
    parser.add_argument("--verify", metavar="certificate|evidence|reference", help=VERIFY_HELP)


def checked_verify_mode(args) -> str | None:
    from tasks.kinds.base import check_verify_mode_name

    check_verify_mode_name(args.verify)
    return args.verify


def add_scan_parser(sub) -> None:
    """`unlearn scan`."""
    scan = sub.add_parser("scan", help="scan a dataset or a text/CSV file for secrets and personal data")
    scan.add_argument("target", help="dataset name (data/NAME) or file path")
    scan.add_argument("--allowlist", type=Path, help="YAML/JSON allowlist (fingerprints, values, patterns)")
    scan.add_argument("--model", help="also measure each finding's exposure in this model's production version "
                      "(text datasets)")
    scan.add_argument("--json", action="store_true", help=JSON_HELP)


def add_demo_parser(sub) -> None:
    """`unlearn demo`."""
    demo = sub.add_parser("demo", help="run a scenario end to end on built-in data")
    demo.add_argument("--scenario", choices=["tabular", "text", "images"], default="text",
                      help="text (default): secrets leaked into a language model; tabular: Adult, certified unlearning; "
                      "images: class forgetting on Fashion-MNIST (alignment beside retraining and every baseline)")
    demo.add_argument("--train-steps", type=positive_whole_number, default=DEMO_TEXT_STEPS,
                      help=f"text scenario: training steps (default {DEMO_TEXT_STEPS})")
    demo.add_argument("--preset", choices=["tiny", "small"], default=None, help="text scenario: model size (default small)")
    add_verify_option(demo)
    add_device_options(demo, precision=True)
    demo.add_argument("--json", action="store_true", help=JSON_HELP)


def add_ui_parser(sub) -> None:
    """`unlearn ui`: MLflow's UI, or Prefect's with --prefect."""
    ui = sub.add_parser("ui", help="open the MLflow UI (or with --prefect the Prefect UI) on 127.0.0.1 over the "
                        "project's own stores")
    ui.add_argument("--prefect", action="store_true", help="the Prefect UI over the flow runs recorded in the "
                    "project (.prefect/): a Prefect server on 127.0.0.1, with no scheduler or other services")
    ui.add_argument("--port", type=whole_number, help=f"port (default {MLFLOW_UI_PORT}; {PREFECT_UI_PORT} with --prefect)")


def add_comply_parser(sub) -> None:
    """`unlearn comply` and `unlearn serve` (the nightly comply as a served deployment)."""
    comply = sub.add_parser("comply", help="process every pending request of the ledger now (one batched update "
                            "per model, a signed certificate per request)")
    comply.add_argument("--keep-superseded", metavar="DAYS", help=KEEP_HELP)
    comply.add_argument("--task-runner", metavar="RUNNER", default=None,
                        help="train every batch's verification reference at once on this Prefect task runner "
                        "before the batches are released in order: dask (prefect-dask; a local cluster, or "
                        "--dask-address) or inline (default; UNLEARN_TASK_RUNNER)")
    comply.add_argument("--dask-address", metavar="ADDRESS", help="an existing Dask scheduler, e.g. "
                        "tcp://10.0.0.5:8786 (implies --task-runner dask; default UNLEARN_DASK_ADDRESS)")
    comply.add_argument("--workers", metavar="N", help="worker processes of the local Dask cluster (default: one per CPU core)")
    add_verify_option(comply)
    add_device_options(comply)
    comply.add_argument("--json", action="store_true", help=JSON_HELP)
    add_local_option(comply)
    serve = sub.add_parser("serve", help="serve the Prefect deployments (nightly comply, weekly audit, on-demand "
                           "forget) from this process, without a work pool, and run the CLI's forget, comply and "
                           "audit for this project in this warm process (.unlearn/service.sock)")
    serve.add_argument("--cron", default="0 2 * * *", help="when the nightly comply runs (default 02:00 UTC)")
    serve.add_argument("--task-runner", metavar="RUNNER", help="the nightly comply's task runner for verification "
                       "references: inline or dask (default: UNLEARN_TASK_RUNNER in the serving process, "
                       "else inline)")
    serve.add_argument("--dask-address", metavar="ADDRESS", help="an existing Dask scheduler for the nightly comply")
    serve.add_argument("--audit-cron", default="0 3 * * 0", help="when the weekly audit of every model with "
                       "requests since its last audit runs (default Sundays 03:00 UTC)")
    add_verify_option(serve)  # the nightly comply's and the on-demand forget's, as `unlearn comply --verify`
    serve.add_argument("--audit-no-rebase", action="store_true", help="the weekly audit keeps the production "
                       "model after a passing audit (by default it promotes its retrained model, as `unlearn audit "
                       "--rebase` and prefect.yaml's weekly deployment do)")
    serve.add_argument("--audit-min-requests", metavar="N", help="the weekly audit audits a model only once N "
                       "requests wait for it (`unlearn audit --min-requests`; default 1)")
    serve.add_argument("--audit-max-age", metavar="DAYS", help="... or once its oldest waiting request is DAYS "
                       "old (`unlearn audit --max-age`: alone, however many wait; default 30 with "
                       "--audit-min-requests N ≥ 2)")


def add_audit_parser(sub) -> None:
    """`unlearn audit [MODEL]`: the amortised retraining (flows/audit.py)."""
    audit = sub.add_parser("audit", help="retrain one reference per model on the current data and check the "
                           "production model against it, for every request since the model's last audit "
                           "(a signed audit record, a ledger entry per request)")
    audit.add_argument("model", nargs="?", help="the registered model to audit (default: every model with a "
                       "request since its last audit)")
    audit.add_argument("--rebase", action="store_true", help="promote the retrained model after a passing audit "
                       "too (guarantee exact, a certified budget reset; a failed audit always promotes it)")
    audit.add_argument("--keep-superseded", metavar="DAYS", help=KEEP_HELP)
    audit.add_argument("--task-runner", metavar="RUNNER", default=None, help="retrain every model's reference "
                       "at once on this task runner: dask or inline (default; UNLEARN_TASK_RUNNER)")
    audit.add_argument("--dask-address", metavar="ADDRESS", help="an existing Dask scheduler (implies dask)")
    audit.add_argument("--workers", metavar="N", help="worker processes of the local Dask cluster")
    audit.add_argument("--min-requests", metavar="N", help="audit a model only once N requests are waiting for "
                       "its audit (default 1; one retraining then covers N requests)")
    audit.add_argument("--max-age", metavar="DAYS", help="... or once its oldest request waiting for an audit is "
                       "DAYS old: with --min-requests N ≥ 2 whichever comes first (default 30 there), alone "
                       "however many wait; refused beside --min-requests 1, where no age matters")
    add_device_options(audit)
    audit.add_argument("--json", action="store_true", help=JSON_HELP)
    add_local_option(audit)
