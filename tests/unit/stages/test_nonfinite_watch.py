"""Stop mode (train.skip_nonfinite=false) notes non-finite losses on the device and reads them
every NONFINITE_CHECK_EVERY steps (no host sync per step): the error still names the first bad
batch, the run stops within that many steps, and no checkpoint holds a diverged model."""
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import TensorDataset

from lt_bench.checkpoint import load_checkpoint
from lt_bench.distributed import DistContext
from lt_bench.errors import NonFiniteLossError
from lt_bench.stages.loop import NONFINITE_CHECK_EVERY, StageJob, TrainOptions, _NonFiniteWatch, fit

CPU = DistContext(device=torch.device("cpu"))


def test_the_watch_keeps_the_first_nonfinite_loss():
    watch = _NonFiniteWatch(torch.device("cpu"))
    watch.observe(torch.tensor(2.5), 1, 0)
    assert watch.first(CPU) is None
    watch.observe(torch.tensor(float("inf")), 2, 7)
    watch.observe(torch.tensor(float("nan")), 3, 8)
    assert watch.first(CPU) == (2, math.inf, 7)


class NanAt:
    """Cross-entropy, but NaN from the given (epoch, batch) on; counts its calls."""

    def __init__(self, epoch: int, batch: int, per_epoch: int):
        self.at, self.per_epoch, self.calls = (epoch - 1) * per_epoch + batch, per_epoch, 0

    def __call__(self, logits, labels):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if self.calls >= self.at else loss


@pytest.mark.parametrize("bad_batch", [3, NONFINITE_CHECK_EVERY, NONFINITE_CHECK_EVERY + 1, 60])
def test_stop_names_the_first_bad_batch_and_keeps_the_last_good_checkpoint(tmp_path, bad_batch):
    per_epoch = 60                                  # 60 batches of 2
    data = TensorDataset(torch.randn(2 * per_epoch, 4), torch.arange(2 * per_epoch) % 3)
    data.targets = data.tensors[1].tolist()
    model = torch.nn.Linear(4, 3)
    recipe = OmegaConf.create({"epochs": 3, "batch_size": 2, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                               "schedule": "constant", "warmup_epochs": 0, "milestones": [], "gamma": 0.1,
                               "reference_epochs": 3})
    loss = NanAt(epoch=2, batch=bad_batch, per_epoch=per_epoch)
    job = StageJob(name="stage1", index=1, model=model, trainable=model, dataset=data, loss_fn=loss,
                   recipe=recipe, checkpoint_path=tmp_path / "c.pt", log_dir=tmp_path / "tb", train_mode=model.train)
    expected_step = per_epoch + bad_batch - 1       # optimizer steps taken before the bad batch
    with pytest.raises(NonFiniteLossError,
                       match=rf"stage1: loss is nan at epoch 2/3, batch {bad_batch}/{per_epoch} "
                             rf"\(optimizer step {expected_step}\)"):
        fit(job, CPU, TrainOptions(seed=0))
    seen_at = loss.calls - per_epoch
    assert bad_batch <= seen_at < bad_batch + NONFINITE_CHECK_EVERY    # stopped within the check interval
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt["progress"]["epochs_done"] == 1                       # epoch 1's, saved before the NaN
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
