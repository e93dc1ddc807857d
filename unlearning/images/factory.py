"""Users' own PyTorch image classifiers, built by a function they name: `package.module:function`.

The factory is called with the keyword arguments it declares among

    n_classes: int                 the dataset's number of classes
    in_channels: int               1 (grey) for every dataset `unlearn data add` stores today
    image_size: tuple[int, int]    (H, W)

and returns an `nn.Module` whose forward maps a batch x (n, C, H, W) of floats in [0, 1] to logits
(n, n_classes) (normalise inside the model, as cnn.CNN does: every caller feeds raw pixels). It is
called with torch's RNG seeded (`seed`; the global RNG is untouched), so the initial weights are
deterministic and retraining replays them.

Penultimate features (what DA, LP, NMI/F1, alignment and the influence updates read): the
classifier layer is the submodule `head`, or the one named by the model's attribute
`unlearn_head` (a dotted path, e.g. "fc" or "classifier.2"); it must be the model's last step,
model(x) = head(features(x)). The features are the model's `features(x)` method when it has
one, returning (n, d); otherwise the input of the classifier layer, captured as the model runs.
Both are checked on a probe batch when the model is built.

`UserModel` wraps the module behind the interface of cnn.CNN that the image methods and metrics
use (features, head, forward, body/pool_last, parameter_groups, config, from_config). Its
parameter group `last` is the classifier layer (the built-in CNN's is the last residual block +
head: a user's blocks are not known).

Security: building a model imports the factory's module and runs its code. `load` rebuilds a
stored model only if its factory is in `allow`, which the caller fills from what the user passed
(tasks.factories), never from the stored file itself.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from unlearning.errors import UnlearnError
from unlearning.images import cnn

FORMAT = "factory/1"
ARGUMENTS = ("n_classes", "in_channels", "image_size")
PROBE = 2  # images in the probe batch a new model is checked on
EXAMPLE = "tests.custom_models:build"


# --- the factory ----------------------------------------------------------------------------------

def split_spec(spec: str) -> tuple[str, str]:
    """'package.module:function' → (module, function); one-line UnlearnError otherwise."""
    module, sep, name = str(spec).partition(":")
    if not sep or not module.strip() or not name.strip():
        raise UnlearnError(f"--model-factory {spec!r} is not package.module:function: name the module and the "
                           f"function that builds the model, separated by ':' (e.g. {EXAMPLE})")
    return module.strip(), name.strip()


def import_module(spec: str):
    """The factory's module, from sys.path or else the current folder (as `python -m` finds it:
    the `unlearn` script's own folder is on sys.path, the project's is not)."""
    module, _ = split_spec(spec)
    try:
        try:
            return _import_held(module)
        except ModuleNotFoundError as error:
            here = str(Path.cwd())
            if error.name != module.split(".")[0] or here in sys.path:
                raise
            # last, and only for this import: the user's folder never shadows an installed package,
            # and a later import of an absent optional package (peft, prefect_dask) never finds a
            # same-named file there
            sys.path.append(here)
            try:
                return _import_held(module)
            finally:
                sys.path.remove(here)
    except ModuleNotFoundError as error:
        raise UnlearnError(f"model factory {spec!r}: cannot import module '{module}' ({error}); install it or "
                           f"run from the folder that holds it (or add that folder to PYTHONPATH)") from None
    except ScriptExit as error:
        raise UnlearnError(f"model factory {spec!r}: importing module '{module}' ended the program (SystemExit "
                           f"{error.code!r}): it runs as a script when imported, e.g. parses the command line; "
                           f"put the factory in a module that only defines it, or its script part under "
                           f"`if __name__ == \"__main__\":`") from None
    except Exception as error:  # noqa: BLE001 — the user's module failed while importing: say where
        raise UnlearnError(f"model factory {spec!r}: importing module '{module}' raised "
                           f"{type(error).__name__}: {_one_line(error)}; fix the module") from None


class ScriptExit(Exception):
    """A factory's module called sys.exit while imported (SystemExit carries `code`)."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def _import_held(module: str):
    """importlib.import_module, with what the module writes to stderr held until it has imported.
    A training script named as the factory's module parses the command line when imported: argparse
    printed its usage and `error: unrecognized arguments: train …` — unlearn's own arguments, as if
    unlearn had refused them — and ended the process. That text is dropped; anything else is passed on."""
    import contextlib
    import io

    held = io.StringIO()
    try:
        with contextlib.redirect_stderr(held):
            imported = importlib.import_module(module)
    except SystemExit as exit_:
        raise ScriptExit(exit_.code) from None
    except BaseException:
        sys.stderr.write(held.getvalue())
        raise
    sys.stderr.write(held.getvalue())
    return imported


def resolve(spec: str):
    """The factory function named by `spec` (imports its module: runs the user's code)."""
    module = import_module(spec)
    name = split_spec(spec)[1]
    try:
        fn = module
        for part in name.split("."):
            fn = getattr(fn, part)
    except AttributeError:
        raise UnlearnError(f"model factory {spec!r}: module '{module.__name__}' has no attribute '{name}'; "
                           f"define `def {name}(n_classes, in_channels): ... return model` there") from None
    if not callable(fn):
        raise UnlearnError(f"model factory {spec!r}: '{name}' is a {type(fn).__name__}, not a function; name a "
                           f"function that returns the model")
    return fn


def source_sha256(spec: str) -> str | None:
    """sha256 of the factory module's source file (lineage: which code built the model); None for a
    module without a file."""
    path = getattr(import_module(spec), "__file__", None)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).is_file() else None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]


def call_factory(spec: str, n_classes: int, in_channels: int, image_size: tuple[int, int], seed: int) -> nn.Module:
    """The factory's module, with the arguments it declares, under a seeded RNG."""
    fn = resolve(spec)
    given = {"n_classes": n_classes, "in_channels": in_channels, "image_size": tuple(image_size)}
    try:
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: v for k, v in given.items() if takes_any or k in params}
    except (TypeError, ValueError):  # no signature (a builtin): call it bare
        kwargs = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net = fn(**kwargs)
        except (Exception, SystemExit) as error:  # noqa: BLE001 — the user's code: one line naming it
            raise UnlearnError(f"model factory {spec!r} raised {type(error).__name__}: {_one_line(error)}; it is "
                               f"called with the keyword arguments it declares among {', '.join(ARGUMENTS)}") from None
    if not isinstance(net, nn.Module):
        raise UnlearnError(f"model factory {spec!r} returned a {type(net).__name__}, not a torch.nn.Module: "
                           f"return the model")
    return net


# --- the wrapped model ----------------------------------------------------------------------------

def head_name(net: nn.Module, spec: str) -> str:
    """The classifier layer's path in `net`: its `unlearn_head` attribute, else 'head'."""
    name = getattr(net, "unlearn_head", None)
    if name is None:
        if isinstance(getattr(net, "head", None), nn.Module):
            return "head"
        raise UnlearnError(f"model factory {spec!r}: the model ({type(net).__name__}) has no classifier layer named "
                           f"'head': name its last layer in the model, e.g. `model.unlearn_head = \"fc\"` "
                           f"(docs/images.md, your own models)")
    try:
        layer = net.get_submodule(str(name))
    except AttributeError:
        layer = None
    if layer is None or not any(True for _ in layer.parameters()):
        raise UnlearnError(f"model factory {spec!r}: unlearn_head = {name!r} names no layer with weights in "
                           f"{type(net).__name__}; set it to the path of the classifier layer (e.g. 'fc')")
    return str(name)


class UserModel(nn.Module):
    """A user's module behind cnn.CNN's interface (module doc). `config` is what rebuilds it."""

    def __init__(self, net: nn.Module, config: dict, feature_dim: int | None = None):
        super().__init__()
        self.net = net
        self.config = config
        self._feature_dim = feature_dim

    @classmethod
    def from_config(cls, config: dict, seed: int = 0) -> "UserModel":
        """A fresh model from the recorded factory (imports its module): retraining's architecture."""
        net = call_factory(config["factory"], int(config["n_classes"]), int(config["in_channels"]),
                           tuple(config["image_size"]), seed)
        return cls(net, dict(config), config.get("feature_dim"))

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.config["head"])

    @property
    def feature_dim(self) -> int:
        return int(self._feature_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d): the model's features(x), or what enters its classifier layer."""
        own = getattr(self.net, "features", None)
        if inspect.ismethod(own):
            return own(x)
        seen: list[torch.Tensor] = []
        # a hook per call, removed at once: a copy or a pickle of the model carries none
        handle = self.head.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
        try:
            self.net(x)
        finally:
            handle.remove()
        if not seen:
            raise UnlearnError(f"model factory {self.config['factory']!r}: the classifier layer "
                               f"'{self.config['head']}' is never called by the model's forward")
        return seen[-1].flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (n, C)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        """What enters the `last` group (the classifier layer): the features."""
        return self.features(x)

    def pool_last(self, h: torch.Tensor) -> torch.Tensor:
        return h

    def parameter_groups(self) -> dict[str, list[str]]:
        """all; head = last = the classifier layer's weights (a user's blocks are not known)."""
        names = [n for n, _ in self.named_parameters()]
        prefix = f"net.{self.config['head']}."
        head = [n for n in names if n.startswith(prefix)]
        return {"all": names, "head": head, "last": head}


def check_model(model: UserModel, in_channels: int, image_size: tuple[int, int], n_classes: int) -> int:
    """Run a probe batch: logits (n, n_classes), features (n, d), and model(x) = head(features(x)).
    Returns d; one-line UnlearnError naming what does not hold."""
    spec = model.config["factory"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(PROBE, in_channels, *image_size, generator=gen)  # (n, C, H, W) in [0, 1]
    shape = tuple(x.shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
            if not isinstance(logits, torch.Tensor):
                raise UnlearnError(f"model factory {spec!r}: the model returns a {type(logits).__name__} for a "
                                   f"batch {shape}, not a tensor of logits")
            if tuple(logits.shape) != (PROBE, n_classes):
                raise UnlearnError(f"model factory {spec!r}: the model maps a batch {shape} to logits of shape "
                                   f"{tuple(logits.shape)}, the dataset has {n_classes} classes: make its last layer "
                                   f"output n_classes ({n_classes}) logits per image")
            f = model.features(x)
            if f.ndim != 2 or len(f) != PROBE:
                raise UnlearnError(f"model factory {spec!r}: features(x) has shape {tuple(f.shape)} for a batch "
                                   f"{shape}: return the penultimate features as (n, d)")
            if not torch.allclose(model.head(f), logits, rtol=1e-4, atol=1e-5):
                raise UnlearnError(f"model factory {spec!r}: model(x) is not head(features(x)): the classifier "
                                   f"layer '{model.config['head']}' must be the model's last step")
    except UnlearnError:
        raise
    except Exception as error:  # noqa: BLE001 — the user's forward: one line naming it
        raise UnlearnError(f"model factory {spec!r}: the model fails on a batch {shape} of the dataset's images "
                           f"({type(error).__name__}: {_one_line(error)})") from None
    finally:
        model.train(was_training)
    return int(f.shape[1])


def build(spec: str, n_classes: int, in_channels: int, image_size: tuple[int, int], seed: int = 0) -> UserModel:
    """A user's model built by `spec`, checked (check_model), its config recording the factory and
    its module's source hash."""
    net = call_factory(spec, n_classes, in_channels, image_size, seed)
    config = {"factory": spec, "factory_sha256": source_sha256(spec), "n_classes": int(n_classes),
              "in_channels": int(in_channels), "image_size": [int(s) for s in image_size],
              "head": head_name(net, spec)}
    model = UserModel(net, config)
    config["feature_dim"] = model._feature_dim = check_model(model, in_channels, tuple(image_size), n_classes)
    return model


def model_from_config(config: dict, seed: int = 0) -> nn.Module:
    """A fresh network of a recorded architecture: the built-in CNN or a user's factory."""
    if "factory" in config:
        return UserModel.from_config(config, seed)
    return cnn.CNN.from_config(config, seed)


# --- persistence ----------------------------------------------------------------------------------

def save(path: str | Path, model: UserModel, schedule: cnn.TrainSchedule | None = None) -> None:
    """One file, weights_only-loadable: the factory's config and the weights (never the module)."""
    torch.save({"format": FORMAT, "preset": None, "config": model.config,
                "schedule": None if schedule is None else schedule.to_dict(),
                "state": model.state_dict()}, Path(path))


def untrusted(spec: str) -> UnlearnError:
    return UnlearnError(f"this model was built by the model factory '{spec}', which has not been allowed here: "
                        f"loading it imports and runs that module; if you trust it, train with "
                        f"`--model-factory {spec}` in this project or set UNLEARN_MODEL_FACTORIES={spec}")


def load(blob: dict, allow: Collection[str]) -> tuple[UserModel, cnn.TrainSchedule | None]:
    """Rebuild a saved model through its factory — only if the factory is in `allow` (module doc)."""
    config = blob["config"]
    if config["factory"] not in allow:
        raise untrusted(config["factory"])
    model = UserModel.from_config(config)
    try:
        model.load_state_dict(blob["state"])
    except RuntimeError as error:
        raise UnlearnError(f"model factory {config['factory']!r} now builds a model whose weights do not match the "
                           f"stored ones ({_one_line(error)[:160]}): restore the factory's code the model was "
                           f"trained with (sha256 {config.get('factory_sha256')})") from None
    model.eval()
    schedule = None if blob["schedule"] is None else cnn.TrainSchedule(**blob["schedule"])
    return model, schedule
