"""train.compile: the shared loop with torch.compile gives the eager loop's losses and weights,
and its checkpoints hold the plain module's state dict."""
import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from lt_bench.checkpoint import load_checkpoint
from lt_bench.distributed import DistContext
from lt_bench.errors import ConfigError
from lt_bench.models import build_model
from lt_bench.stages.loop import StageJob, TrainOptions, fit
from lt_bench.validate import validate

# Stated tolerance: compiled kernels may fuse and reorder float32 reductions, nothing more.
RTOL, ATOL = 1e-4, 1e-5


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 1, 8, 8, generator=g)
    labels = torch.arange(n) % 10
    images += labels.view(-1, 1, 1, 1).float() / 5        # something to learn
    data = TensorDataset(images, labels)
    data.targets = labels.tolist()
    return data


def _train(make_cfg, tmp_path, compile_backend: str | None, model):
    cfg = make_cfg("task=digits_lt", "stage1.epochs=3", "stage1.batch_size=16", "stage1.warmup_epochs=0")
    opts = TrainOptions(seed=0, compile=compile_backend is not None, compile_backend=compile_backend or "inductor")
    job = StageJob(name="stage1", index=1, model=model, trainable=model, dataset=_data(),
                   loss_fn=torch.nn.functional.cross_entropy, recipe=cfg.stage1,
                   checkpoint_path=tmp_path / "ckpt.pt", log_dir=tmp_path / "tb", train_mode=model.train)
    progress = fit(job, DistContext(device=torch.device("cpu")), opts)
    return [h["loss"] for h in progress["history"]], model


def _check_same(make_cfg, tmp_path, backend):
    torch.manual_seed(0)
    init = build_model("resnet8", 10, in_chans=1)
    eager_losses, eager = _train(make_cfg, tmp_path / "eager", None, copy.deepcopy(init))
    compiled_losses, compiled = _train(make_cfg, tmp_path / "compiled", backend, copy.deepcopy(init))
    assert eager_losses[-1] < eager_losses[0]                       # it trains at all
    torch.testing.assert_close(torch.tensor(compiled_losses), torch.tensor(eager_losses), rtol=RTOL, atol=ATOL)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4, msg=name)
    assert not torch.equal(compiled.classifier.weight, init.classifier.weight)   # the compiled steps updated it
    saved = load_checkpoint(tmp_path / "compiled" / "ckpt.pt")["model"]
    assert set(saved) == set(init.state_dict())                     # no "_orig_mod." names


def test_compiled_loop_matches_eager_aot(make_cfg, tmp_path):
    """The plumbing, with the fast aot_eager backend (dynamo tracing + AOT autograd, no codegen)."""
    _check_same(make_cfg, tmp_path, "aot_eager")


@pytest.mark.slow
def test_compiled_loop_matches_eager_inductor(make_cfg, tmp_path):
    """The default backend (inductor's generated C++ on CPU): about a minute of compilation."""
    _check_same(make_cfg, tmp_path, "inductor")


def test_compile_settings_are_checked(make_cfg):
    with pytest.raises(ConfigError, match="not a torch.compile backend"):
        validate(make_cfg("train.compile=true", "train.compile_backend=nosuch"))
    with pytest.raises(ConfigError, match="train.compile must be true or false"):
        validate(make_cfg("train.compile=3"))
    validate(make_cfg("train.compile=true"))
