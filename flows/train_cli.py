"""`unlearn data add`, `unlearn train` and `unlearn model import`: datasets and models into the
project. Everything a user can get wrong is checked before a run is recorded (flows/cli.py runs
the commands; their parser is flows/arguments.py)."""

from __future__ import annotations

from pathlib import Path

from flows.arguments import checked_config, checked_device
from flows.compliance_cli import EXIT_OK, emit
from flows.settings import probe_tracking_server
from unlearning.storage import check_new_model_name
from unlearning.errors import UnlearnError


def cmd_data(args, root: Path) -> int:
    from tasks.data import add_dataset
    from tasks.erased import refuse_erased
    from tasks.formats import format_of
    from tasks.release import project_lock_once_started

    with project_lock_once_started(root, "data add"):
        # records completed ledger requests erased are not ingested again (one line, exit 2, nothing written)
        dataset, version = add_dataset(root, args.name, args.file, args.target, args.id_column, args.replace,
                                       text_column=args.text_column, images=args.images, size=args.size,
                                       admit=refuse_erased)
    payload, human = format_of(dataset).dataset_summary(dataset, version)
    emit(args, payload, human)
    return EXIT_OK


def cmd_train(args, root: Path) -> int:
    from tasks import data as data_store
    from unlearning.tabular.training import TrainConfig

    config = checked_config(TrainConfig, lam=args.lam, certified=args.certified, epsilon=args.epsilon,
                            delta=args.delta, budget=args.budget, seed=args.seed)
    from unlearning.text.lm import TextTrainConfig

    from unlearning.images.bundle import ImageTrainConfig

    device = checked_device(args)
    text_config = checked_config(TextTrainConfig, preset=args.preset or "small", seed=args.seed,
                                 device=device, precision=args.precision, **pretrained_options(args))
    image_config = checked_config(ImageTrainConfig, preset=args.preset, subset=args.subset, epochs=args.epochs,
                                  seed=args.seed, factory=args.model_factory, device=device,
                                  precision=args.precision)
    if args.model is not None:
        check_new_model_name(args.model, exists=model_exists(root, args.model))
    dataset = data_store.load_dataset(root, args.dataset)  # fail fast, before any run is recorded
    from tasks.kinds import kind_of

    kind = kind_of(dataset)
    if args.model_factory is not None and kind.name != "images":
        raise UnlearnError(f"--model-factory builds image models; dataset '{args.dataset}' is a {kind.name} dataset: "
                           f"drop the option or train on an image dataset")
    if kind.name == "table":
        check_table_precision(args)
    if kind.name != "text" and text_config.from_pretrained:
        raise UnlearnError(f"--from-pretrained fine-tunes a language model on a text corpus: dataset "
                           f"'{args.dataset}' is {'a table' if kind.name == 'table' else 'images'}; give a text "
                           f"dataset (`unlearn data add NAME --file notes.txt`)")
    kind.check_trainable(dataset, {"table": config, "text": text_config, "images": image_config}[kind.name])
    from tasks.erased import refuse_erased_training

    # a model's erasures were made on its dataset: trained on a copy of the data under another name, it
    # learned them again, and its certificates still said erased
    refuse_model_of_another_dataset(root, args.model or args.dataset, args.dataset)
    refuse_erased_training(root, dataset)  # what completed requests erased is not learned again
    from flows.train import train_flow
    from tasks.release import project_lock_once_started

    with project_lock_once_started(root, "train"):  # production must not move under a running release
        summary = train_flow(root=str(root), dataset=args.dataset, model=args.model, config=config,
                             text_config=text_config, image_config=image_config)
    emit(args, summary, f"model {summary['model']['name']} v{summary['model']['version']} → production "
         f"({kind.train_quality(summary)}, fit {summary['timings']['fit_s']:.1f} s)")
    return EXIT_OK


def cmd_model_import(args, root: Path) -> int:
    """`unlearn model import NAME --from-pretrained DIR --dataset D`: everything checked before the
    flow records anything."""
    from flows.settings import keep_run_failures_off_console
    from tasks import data as data_store
    from tasks.kinds import kind_of
    from tasks.kinds.hf import check_base_is_not_the_model, check_pretrained, declared_schedule
    from tasks.release import project_lock_once_started, recover_interrupted

    check_new_model_name(args.name)
    keep_run_failures_off_console()
    probe_tracking_server()
    recover_interrupted(root, "model import")
    checkpoint = str(args.from_pretrained.expanduser().resolve())
    base = str(args.base.expanduser().resolve()) if args.base else None
    schedule = declared_schedule(base, args.steps, args.lr, args.batch, args.seq_len)
    dataset = data_store.load_dataset(root, args.dataset)
    kind = kind_of(dataset)
    if kind.name != "text":
        raise UnlearnError(f"--from-pretrained registers a language model of a text corpus: dataset "
                           f"'{args.dataset}' is {'a table' if kind.name == 'table' else 'images'}")
    kind.check_trainable(dataset, None)
    check_pretrained(checkpoint, corpus=dataset, seq_len=schedule.get("seq_len"))
    if base:
        check_pretrained(base, corpus=dataset, seq_len=schedule.get("seq_len"))
        check_base_is_not_the_model(checkpoint, base)
    refuse_model_of_another_dataset(root, args.name, args.dataset)
    from tasks.erased import refuse_erased_training

    # declared trained on data holding what completed requests erased: it learned it, as `train` would
    refuse_erased_training(root, dataset, imported=True)
    from flows.train import import_flow

    with project_lock_once_started(root, "model import"):
        summary = import_flow(root=str(root), model=args.name, dataset=args.dataset, checkpoint=checkpoint,
                              base=base, seed=args.seed, **schedule)
    emit(args, summary, f"model {args.name} v{summary['model']['version']} → production (imported from "
         f"{checkpoint}, declared trained on data version {summary['data_version']}; held-out perplexity "
         f"{summary['metrics']['held_out_perplexity']:.2f})")
    return EXIT_OK


def model_exists(root: Path, model: str) -> bool:
    """Whether `model` has a version in the project's tracking store (a name safe to look up)."""
    from tasks import tracking
    from unlearning.storage import check_model_name

    try:
        check_model_name(model)
    except UnlearnError:
        return False
    if not tracking.store_exists(root):
        return False
    tracking.connect(root)
    return bool(tracking.model_versions(model))


def refuse_model_of_another_dataset(root: Path, model: str, dataset: str) -> None:
    """UnlearnError when `model` is the production model of another dataset than `dataset`: a model is
    of one dataset, whose erasures its certificates and audits speak of."""
    from tasks import tracking

    if not tracking.store_exists(root):
        return
    tracking.connect(root)
    other = tracking.production_version(model)
    if other is not None and (its := tracking.trained_on(other, model)) != dataset:
        raise UnlearnError(f"model {model} is the production model of dataset '{its}': "
                           f"choose another name for a model of '{dataset}' (or `unlearn model retire {model}` first)")


def pretrained_options(args) -> dict:
    """TextTrainConfig's budget and checkpoint options: `--seconds` is the character LM's (a
    Hugging Face fine-tune is given in steps), `--lora` adapts a `--from-pretrained` checkpoint."""
    if args.from_pretrained is None:
        if args.lora:
            raise UnlearnError("--lora fine-tunes adapters of a Hugging Face checkpoint: give it with "
                               "--from-pretrained DIR, or leave --lora out")
        return {"seconds": 120.0 if args.seconds is None else args.seconds, "steps": args.steps}
    if args.seconds is not None:
        raise UnlearnError("--seconds is the character LM's time budget: a --from-pretrained fine-tune is "
                           "given in steps (--steps N)")
    return {"steps": args.steps, "from_pretrained": str(args.from_pretrained.expanduser().resolve()),
            "lora": args.lora}


def check_table_precision(args) -> None:
    """A table model is fit and unlearnt in float64 (its certificate depends on those numbers)."""
    if args.precision != "fp32":
        raise UnlearnError(f"--precision {args.precision} applies to deep models: a table model is fit in float64 "
                           f"on the CPU (its certified removal depends on it); leave --precision out")
