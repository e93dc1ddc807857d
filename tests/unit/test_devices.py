"""unlearning.devices: `--device` and `--precision` resolved in one line each, a CPU run
bit-identical whether or not a device is named, mixed precision really used, and the cuDNN
switch a Hessian-vector product through an LSTM needs on CUDA."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from unlearning import devices, references
from unlearning.text.shakespeare import build_shakespeare
from unlearning.errors import UnlearnError
from unlearning.images.bundle import ImageTrainConfig
from unlearning.text import lm
from unlearning.text.data import TextCorpus

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def one_line_error(spec: str, *expected: str) -> str:
    with pytest.raises(UnlearnError) as caught:
        devices.resolve_device(spec)
    message = str(caught.value)
    assert "\n" not in message
    for part in expected:
        assert part in message, message
    return message


def test_cpu_and_auto_resolve_to_the_cpu_without_cuda():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert devices.resolve_device("auto") == torch.device("cpu")
        assert devices.resolve_device(None) == torch.device("cpu")


@NO_CUDA
def test_cuda_without_cuda_says_what_to_use_instead():
    one_line_error("cuda", "CUDA is not available", "--device cpu", "docs/operations.md")
    one_line_error("cuda:1", "CUDA is not available")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_absent_is_one_line():
    one_line_error("mps", "MPS", "--device cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "tpu", "cuda0"])
def test_a_name_that_is_no_device_lists_the_choices(spec):
    one_line_error(spec, "is not a device", "auto, cpu, cuda, cuda:N, mps")


def test_cuda_indices_are_checked_against_the_gpus_present(monkeypatch):
    """The CUDA branch with two GPUs, as torch would report them (the machine has none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("cuda:1") == torch.device("cuda", 1)
    one_line_error("cuda:2", "has 2 CUDA GPU(s)", "cuda:0 to cuda:1")


def test_precision_is_checked_against_the_device():
    cpu = torch.device("cpu")
    assert devices.check_precision("fp32", cpu) == "fp32"
    assert devices.check_precision("bf16", cpu) == "bf16"
    assert devices.check_precision("fp16", torch.device("cuda", 0)) == "fp16"
    with pytest.raises(UnlearnError, match="fp16 needs a GPU"):
        devices.check_precision("fp16", cpu)
    with pytest.raises(UnlearnError, match="fp8"):
        devices.check_precision("fp8", cpu)


def test_training_configs_record_the_resolved_device():
    """What MLflow gets as params (the kinds log config.model_dump()): "cpu", never "auto"."""
    expected = str(devices.resolve_device("auto"))
    for config in (lm.TextTrainConfig(), ImageTrainConfig(), lm.TextTrainConfig(device="auto")):
        assert config.model_dump()["device"] == expected
        assert config.model_dump()["precision"] == "fp32"
    assert lm.TextTrainConfig(device="cpu", precision="bf16").compute == devices.Compute("cpu", "bf16")


def test_double_backward_safe_turns_cudnn_off_only_for_cuda():
    assert torch.backends.cudnn.enabled
    with devices.double_backward_safe(torch.device("cuda", 0)):
        assert not torch.backends.cudnn.enabled
    assert torch.backends.cudnn.enabled
    with devices.double_backward_safe(torch.device("cpu")):
        assert torch.backends.cudnn.enabled


@pytest.fixture(scope="module")
def corpus() -> TextCorpus:
    full = build_shakespeare()
    return TextCorpus("small", full.records[:60], full.source)


def weights(bundle) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in bundle.model.state_dict().items()}


def test_cpu_training_is_bit_identical_with_and_without_a_device(corpus):
    plain, _ = lm.train_text_model(corpus, "tiny", steps=12, seed=3)
    named, _ = lm.train_text_model(corpus, "tiny", steps=12, seed=3, device="cpu")
    auto, _ = lm.train_text_model(corpus, "tiny", steps=12, seed=3, device=lm.TextTrainConfig().device)
    for other in (named, auto):
        assert all(torch.equal(weights(plain)[k], w) for k, w in weights(other).items())
    assert "precision" not in plain.settings  # fp32 bundles are stored exactly as before


def test_bf16_autocast_is_really_used_and_recorded_for_the_retraining(corpus):
    fp32, _ = lm.train_text_model(corpus, "tiny", steps=12, seed=3, device="cpu")
    bf16, _ = lm.train_text_model(corpus, "tiny", steps=12, seed=3, device="cpu", precision="bf16")
    assert any(not torch.equal(weights(fp32)[k], w) for k, w in weights(bf16).items())
    assert all(w.dtype == torch.float32 for w in weights(bf16).values())  # master weights stay fp32
    assert bf16.settings["precision"] == "bf16"
    windows = torch.zeros(4, 33, dtype=torch.long)
    job = references.text_job(bf16.model.config, bf16.settings, windows)
    assert job.settings["precision"] == "bf16"
    assert "precision" not in references.text_job(fp32.model.config, fp32.settings, windows).settings


def test_a_reference_job_is_the_same_job_on_every_device():
    """The pool of prefetched references matches by key: where a job trains is not what it is."""
    job = references.text_job({"vocab_size": 5, "embed": 4, "hidden": 4, "layers": 1},
                              {"steps": 2, "lr": 0.01, "batch": 2, "seed": 0}, torch.zeros(3, 5, dtype=torch.long))
    assert job.device == "cpu"
    assert replace(job, device="cuda:0").key == job.key


@pytest.mark.parametrize("curvature", ["hessian", "gauss_newton"])
def test_every_curvature_forward_runs_where_cudnn_can_be_switched_off(monkeypatch, curvature):
    """The forward pass a Hessian-vector product differentiates twice is inside
    double_backward_safe (on CUDA: cuDNN off; its LSTM has no double backward)."""
    import contextlib

    from unlearning.text import deep_influence
    from unlearning.text.charlm import CharLSTM

    inside, forwards = [], []

    @contextlib.contextmanager
    def recording(device):
        inside.append(device)
        try:
            yield
        finally:
            inside.pop()

    monkeypatch.setattr(deep_influence, "double_backward_safe", recording)
    model = CharLSTM(vocab_size=7, embed=4, hidden=5)
    model.register_forward_hook(lambda *_: forwards.append(bool(inside)))
    windows = torch.randint(7, (3, 6))
    operator = deep_influence.CURVATURES[curvature](model, deep_influence.select_params(model), windows,
                                                    torch.ones(3), damping=1.0)
    product = operator(torch.ones(sum(p.numel() for p in model.parameters())))
    assert forwards == [True] and torch.isfinite(product).all()


def test_a_reference_trained_in_fp16_is_not_replayed_on_the_cpu():
    """A model trained with --precision fp16 on a GPU, audited where there is none: one line, not an
    fp16 autocast on the CPU (which the CLI refuses for training)."""
    import pytest
    import torch

    from unlearning import references
    from unlearning.errors import UnlearnError
    from unlearning.text.charlm import CharLSTM

    model = CharLSTM(vocab_size=8, embed=4, hidden=8)
    job = references.text_job(model.config, {"steps": 1, "lr": 1e-3, "batch": 2, "seed": 0, "precision": "fp16"},
                              torch.zeros(4, 5, dtype=torch.long), device="cpu")
    with pytest.raises(UnlearnError, match="trained in fp16, which cpu cannot replay"):
        references.train(job)
