"""The positive-gradient statistics (GOL's Figure 7): the collector against autograd and closed
forms, inert when off, the mmengine hook on a tiny toy Mask R-CNN run, and the plot command."""
import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lt_bench.detection.grad_stats import KIND, PositiveGradientCollector, box_classification_losses
from lt_bench.detection.losses import ActivationCrossEntropyLoss, DropLoss, EQLLoss
from lt_bench.detection.losses.base import _ClassificationLoss
from lt_bench.errors import ConfigError

needs_mmdet = pytest.mark.skipif(importlib.util.find_spec("mmdet") is None,
                                 reason="the detection extra is not installed (make det)")
FREQ = [0.0005, 0.01, 0.0002, 0.5]          # tail (< 0.0011): classes 0 and 2
C = 4
LOSSES = {
    "softmax": lambda: ActivationCrossEntropyLoss("softmax", num_classes=C),
    "sigmoid": lambda: ActivationCrossEntropyLoss("sigmoid", num_classes=C, loss_weight=1.5),
    "gumbel": lambda: ActivationCrossEntropyLoss("gumbel", num_classes=C),
    "eql+gumbel": lambda: EQLLoss("gumbel", num_classes=C, image_frequency=FREQ),
    "drop+sigmoid": lambda: DropLoss("sigmoid", num_classes=C, image_frequency=FREQ),
    "drop+gumbel": lambda: DropLoss("gumbel", num_classes=C, image_frequency=FREQ),
}


def batch(loss, n=60, seed=0):
    """Logits (a leaf, and the non-leaf the loss sees, as an fc output is) and labels with
    background (label C) and every category; weights with a few zeros."""
    g = torch.Generator().manual_seed(seed)
    width = C + 1 if loss.background_logit else C
    leaf = (torch.randn(n, width, generator=g) * 3).requires_grad_()
    labels = torch.cat([torch.arange(C + 1), torch.randint(0, C + 1, (n - C - 1,), generator=g)])
    weight = torch.ones(n)
    weight[[3, 17]] = 0.0
    return leaf, labels, weight


def forward(loss, leaf, labels, weight, avg_factor=41.0):
    torch.manual_seed(7)                    # DropLoss draws: the same in every pass
    return loss(leaf * 1.0, labels, weight, avg_factor=avg_factor)


def expected_stats(grad, labels, weight=None):
    """Per category: count, sum of |g| and sum of g at [i, label_i] of foreground proposals."""
    count, total, signed = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64), \
        torch.zeros(C, dtype=torch.float64)
    for i, label in enumerate(labels.tolist()):
        if label < C and (weight is None or weight[i] > 0):
            value = float(grad[i, label])
            count[label] += 1
            total[label] += abs(value)
            signed[label] += value
    return count, total, signed


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_collected_sums_equal_autograd_at_the_positive_logits(name):
    loss = LOSSES[name]()
    leaf, labels, weight = batch(loss)
    value = forward(loss, leaf, labels, weight)
    grad, = torch.autograd.grad(value, leaf)
    count, total, signed = expected_stats(grad, labels, weight)
    assert count.sum() > 0 and torch.all(count > 0)

    collector = PositiveGradientCollector(C).attach(loss)
    watched = forward(loss, leaf, labels, weight)
    (watched * 1.0).backward()
    torch.testing.assert_close(collector.count, count, rtol=0, atol=0)
    torch.testing.assert_close(collector.sum, total, rtol=1e-12, atol=0)
    torch.testing.assert_close(collector.signed_sum, signed, rtol=1e-12, atol=0)
    assert torch.all(collector.signed_sum <= 0)                   # a positive is only ever pulled up
    summary = collector.summary()
    assert summary["loss"] == type(loss).__name__ and summary["count"] == [int(v) for v in count]
    assert summary["mean"] == pytest.approx((total / count).tolist(), rel=1e-12)
    assert collector.calls == 1 and summary["skipped"] == 0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_the_mechanism_is_inert(name, monkeypatch):
    """The loss value and the gradient are bit-identical with no collector, with one attached
    (the hooks only read), after it is detached, and without the mechanism at all."""
    loss = LOSSES[name]()
    leaf, labels, weight = batch(loss, seed=3)

    def run():
        value = forward(loss, leaf, labels, weight)
        return value.detach(), torch.autograd.grad(value, leaf)[0]

    plain = run()
    collector = PositiveGradientCollector(C).attach(loss)
    watched = run()
    collector.detach(loss)
    assert loss._grad_collector is None and "_grad_collector" not in vars(loss)
    detached = run()
    with monkeypatch.context() as m:
        m.setattr(_ClassificationLoss, "_watch", lambda self, value, *args, **kwargs: value)
        without = run()
    for other in (watched, detached, without):
        assert torch.equal(plain[0], other[0]) and torch.equal(plain[1], other[1])
    scores = leaf * 1.0                      # no collector: no hook on the logits or the loss value
    value = loss(scores, labels, weight)
    assert not scores._backward_hooks and not value._backward_hooks
    assert "_grad_collector" not in loss.state_dict()


def test_factors_after_the_loss_are_divided_out():
    """A cascade stage weight, an AMP loss scale, another loss added: the same statistics."""
    loss = LOSSES["gumbel"]()
    leaf, labels, weight = batch(loss)
    reference = PositiveGradientCollector(C).attach(loss)
    forward(loss, leaf, labels, weight).backward()
    reference.detach(loss)
    scaled = PositiveGradientCollector(C).attach(loss)
    (512.0 * 0.25 * forward(loss, leaf, labels, weight) + leaf.square().sum()).backward()
    torch.testing.assert_close(scaled.sum, reference.sum, rtol=1e-6, atol=0)
    assert torch.equal(scaled.count, reference.count)
    scaled.detach(loss)
    # reduction='none': one factor per proposal
    rows = PositiveGradientCollector(C).attach(loss)
    per_row = loss(leaf * 1.0, labels, weight, reduction_override="none")
    (per_row * torch.linspace(0.5, 3.0, len(labels))).sum().backward()
    rows.detach(loss)
    grad = torch.autograd.functional.jacobian(lambda z: loss(z, labels, weight, reduction_override="none"),
                                              leaf.detach())
    own = torch.stack([grad[i, i] for i in range(len(labels))])      # d loss_i / d z_i
    count, total, _ = expected_stats(own, labels, weight)
    torch.testing.assert_close(rows.sum, total, rtol=1e-6, atol=0)
    assert torch.equal(rows.count, count)


def test_non_finite_gradients_are_skipped_not_summed():
    """An AMP step that overflows (inf gradients, skipped by the loss scaler) leaves no trace."""
    collector = PositiveGradientCollector(3)
    grad = torch.tensor([[-0.5, 0, 0, 0], [float("inf"), 0, 0, 0], [0, float("nan"), 0, 0], [0, 0, -2.0, 0]])
    collector.add(grad, torch.tensor([0, 0, 1, 2]))
    assert collector.count.tolist() == [1, 0, 1] and collector.sum.tolist() == [0.5, 0, 2.0]
    assert collector.skipped.item() == 2
    collector.add(grad[:1], torch.tensor([0]), upstream=torch.tensor(0.0))    # no gradient reached the loss
    assert collector.count.tolist() == [1, 0, 1] and collector.skipped.item() == 3


# ----------------------------------------------------------------------------- closed forms

def positives(n_per_class=25, seed=0, lo=-3.9, hi=9.9):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat_interleave(n_per_class)
    z_pos = lo + (hi - lo) * torch.rand(len(labels), generator=g, dtype=torch.float64)
    logits = torch.randn(len(labels), C + 1, generator=g, dtype=torch.float64) * 2
    logits[torch.arange(len(labels)), labels] = z_pos
    background = torch.randn(10, C + 1, generator=g, dtype=torch.float64)
    return torch.cat([logits, background]).float(), torch.cat([labels, torch.full((10,), C)])


@pytest.mark.parametrize("activation,closed_form", [
    ("gumbel", lambda z: torch.exp(-z)),                  # d/dz of -log exp(-exp(-z)) = -exp(-z)
    ("sigmoid", lambda z: 1.0 - torch.sigmoid(z)),        # sigmoid(z) - 1
])
def test_collected_mean_matches_the_closed_form(activation, closed_form):
    avg_factor, loss_weight = 37.0, 2.0
    loss = ActivationCrossEntropyLoss(activation, num_classes=C, loss_weight=loss_weight)
    logits, labels = positives()
    collector = PositiveGradientCollector(C).attach(loss)
    loss(logits.requires_grad_(), labels, avg_factor=avg_factor).backward()
    fg = labels < C
    z = logits.detach().double()[fg, labels[fg]]
    magnitude = closed_form(z) * loss_weight / avg_factor
    for c in range(C):
        mine = labels[fg] == c
        assert collector.count[c].item() == mine.sum().item()
        assert collector.summary()["mean"][c] == pytest.approx(magnitude[mine].mean().item(), rel=1e-5)
    assert torch.allclose(collector.signed_sum, -collector.sum)


def test_gumbel_positives_outside_the_clamp_have_zero_gradient():
    loss = ActivationCrossEntropyLoss("gumbel", num_classes=2)         # clamp (-4, 10)
    logits = torch.tensor([[-6.0, 0.0, 0.0], [12.0, 0.0, 0.0], [0.0, 1.0, 0.0]], requires_grad=True)
    collector = PositiveGradientCollector(2).attach(loss)
    loss(logits, torch.tensor([0, 0, 1])).backward()
    assert collector.count.tolist() == [2, 1] and collector.sum[0].item() == 0.0
    assert collector.sum[1].item() == pytest.approx(math.exp(-1.0) / 3, rel=1e-6)


# ----------------------------------------------------------------------------- wiring

def test_box_classification_losses_of_single_and_cascade_heads():
    stage = [SimpleNamespace(loss_cls=LOSSES["gumbel"]()) for _ in range(3)]
    single = SimpleNamespace(roi_head=SimpleNamespace(bbox_head=stage[0]))
    assert box_classification_losses(single) == [stage[0].loss_cls]
    cascade = SimpleNamespace(roi_head=SimpleNamespace(bbox_head=stage))
    assert box_classification_losses(cascade) == [s.loss_cls for s in stage]
    with pytest.raises(ConfigError, match="roi_head.bbox_head"):
        box_classification_losses(SimpleNamespace(bbox_head=stage[0]))
    with pytest.raises(ConfigError, match="lt_bench's box-classification losses"):
        PositiveGradientCollector(3).attach(nn.CrossEntropyLoss())


class _Head(nn.Module):
    def __init__(self, loss):
        super().__init__()
        self.fc_cls = nn.Linear(6, C + 1)
        self.loss_cls = loss


@needs_mmdet
def test_hook_sums_cascade_stages_and_writes_the_file(tmp_path):
    """The hook without a runner's training loop: a 3-stage cascade-like head, two iterations."""
    from lt_bench.detection.grad_hook import PositiveGradientHook
    heads = nn.ModuleList([_Head(LOSSES["gumbel"]()) for _ in range(3)])
    model = nn.Module()
    model.roi_head = nn.Module()
    model.roi_head.bbox_head = heads
    runner = SimpleNamespace(model=model, iter=0, work_dir=str(tmp_path), logger=SimpleNamespace(info=print),
                             train_dataloader=SimpleNamespace(dataset=SimpleNamespace(
                                 metainfo={"classes": ("a", "b", "c", "d")})))
    hook = PositiveGradientHook("stats/grad.json")
    hook.before_train(runner)
    labels = torch.tensor([0, 1, 1, 4, 4, 3])
    for step in range(2):
        features = torch.randn(6, 6)
        total = sum(w * h.loss_cls(h.fc_cls(features), labels) for w, h in zip((1, 0.5, 0.25), heads))
        total.backward()
        hook.after_train_iter(runner, step)
        runner.iter += 1
    hook.after_train(runner)
    data = json.loads((tmp_path / "stats" / "grad.json").read_text())
    assert data["kind"] == KIND and data["num_stages"] == 3 and data["iterations"] == 2 and data["end_iter"] == 2
    assert data["loss"] == "ActivationCrossEntropyLoss" and data["activation"] == "gumbel"
    assert data["classes"] == ["a", "b", "c", "d"] and data["world_size"] == 1
    assert [s["count"] for s in data["stages"]] == [[2, 4, 0, 2]] * 3
    assert data["count"] == [6, 12, 0, 6] and data["mean"][2] is None
    assert data["sum"][1] == pytest.approx(sum(s["sum"][1] for s in data["stages"]))
    assert all(h.loss_cls._grad_collector is None for h in heads)       # detached after training


@needs_mmdet
@pytest.mark.slow
def test_hook_on_a_tiny_toy_mask_rcnn_run(make_cfg, tmp_path):
    """4 iterations of the toy Mask R-CNN (8 images of 64 px, batch 2) with the hook in
    custom_hooks: counts for the categories in the images, zero for the one in none."""
    from mmengine.runner import Runner

    import lt_bench.detection.registry  # noqa: F401
    from lt_bench.detection.grad_stats import positive_gradient_hook
    from lt_bench.detection.runner import build_mmdet_config, prepare_inputs
    from lt_bench.detection.categories import load_category_stats
    from lt_bench.detection.toy import make_toy_lvis, run_overrides

    toy = make_toy_lvis(tmp_path / "toy", num_images=8, image_size=64, image_counts=(6, 4, 3, 2, 1, 0))
    out = tmp_path / "run"
    overrides = [o for o in run_overrides(toy, out) if not o.startswith(("out_dir=", "progress=", "detection.batch"))]
    cfg = make_cfg(*overrides, "activation=gumbel", "detection.batch_size=2", "detection.max_epochs=1",
                   "detection.image_scale=[64,64]", out_dir=out)
    prepared = prepare_inputs(cfg, out)
    mm = build_mmdet_config(cfg, out, load_category_stats(prepared["categories"]), prepared["categories"])
    mm.custom_hooks = [positive_gradient_hook("grad_stats.json")]
    mm.default_hooks["logger"]["interval"] = 1
    Runner.from_cfg(mm).train()
    data = json.loads((out / "grad_stats.json").read_text())
    assert data["iterations"] == 4 and data["num_classes"] == 6 and data["skipped"] == 0
    assert data["loss"] == "ActivationCrossEntropyLoss" and data["activation"] == "gumbel"
    assert all(n > 0 for n in data["count"][:5]) and data["count"][5] == 0 and data["mean"][5] is None
    assert all(m > 0 for m in data["mean"][:5])


# ----------------------------------------------------------------------------- the plot command

def write_stats(path: Path, counts, sums, classes=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"kind": KIND, "num_classes": len(counts), "loss": "ActivationCrossEntropyLoss",
                                "activation": path.parent.name, "iterations": 100, "classes": classes,
                                "count": counts, "sum": sums}))
    return str(path)


@pytest.fixture
def plot_inputs(tmp_path):
    """5 categories listed in label order (ids not sorted by frequency), two runs."""
    cats = [{"id": 7, "name": "c7", "image_count": 3, "frequency": "r"},
            {"id": 2, "name": "c2", "image_count": 500, "frequency": "f"},
            {"id": 9, "name": "c9", "image_count": 40, "frequency": "c"},
            {"id": 4, "name": "c4", "image_count": 150, "frequency": "f"},
            {"id": 5, "name": "c5", "image_count": 8, "frequency": "r"}]
    ann = tmp_path / "cats.json"
    ann.write_text(json.dumps(cats))
    names = [c["name"] for c in cats]
    a = write_stats(tmp_path / "sigmoid" / "grad_stats.json", [4, 50, 10, 20, 0], [0.4, 0.5, 0.2, 0.2, 0.0], names)
    b = write_stats(tmp_path / "gumbel" / "grad_stats.json", [4, 50, 10, 20, 2], [4.0, 0.5, 1.0, 0.4, 0.0], names)
    return a, b, str(ann)


def test_plot_command_writes_png_and_frequency_ordered_json(tmp_path, plot_inputs, capsys):
    from lt_bench.detection.analysis.positive_gradients import main
    a, b, ann = plot_inputs
    png, out_json = tmp_path / "grad.png", tmp_path / "grad.json"
    argv = [a, b, "--ann", ann, "--labels", "sigmoid", "gumbel", "--out", str(png), "--json", str(out_json)]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out_json.read_text())
    assert result["order"] == [2, 4, 9, 5, 7]                      # by image count, most first
    assert [c["frequency"] for c in result["categories"]] == ["f", "f", "c", "r", "r"]
    assert [c["label"] for c in result["categories"]] == [1, 3, 2, 4, 0]
    means = [c["mean"] for c in result["categories"]]
    assert means[3] == [None, 0.0]
    assert means[:3] + means[4:] == [pytest.approx(m) for m in ([0.01, 0.01], [0.01, 0.02], [0.02, 0.1], [0.1, 1.0])]
    assert [r["label"] for r in result["runs"]] == ["sigmoid", "gumbel"]
    assert result["runs"][1]["band_means"] == {"f": pytest.approx(0.015), "c": pytest.approx(0.1),
                                               "r": pytest.approx(0.5)}
    assert result["runs"][1]["zero_means"] == 1 and result["runs"][0]["categories_with_positives"] == 4
    # never over an existing output without --overwrite
    assert main(argv) == 2 and "exists; --overwrite replaces it" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize("case,message", [
    ("labels", "ConfigError: --labels: 1 label(s) for 2 file(s)"),
    ("not_stats", "DataError: {bad}: not a positive-gradient statistics file"),
    ("classes", "DataError: {a}: its classes are not --ann"),
    ("width", "DataError: {bad} has 3 categories, --ann"),
    ("stage", "ConfigError: --stage 1: {a} has 1 stage(s)"),
])
def test_plot_command_errors_name_the_bad_file_or_value(tmp_path, plot_inputs, capsys, case, message):
    from lt_bench.detection.analysis.positive_gradients import main
    a, b, ann = plot_inputs
    bad = tmp_path / "bad.json"
    argv = [a, b, "--ann", ann, "--out", str(tmp_path / "g.png")]
    if case == "labels":
        argv += ["--labels", "one"]
    elif case == "not_stats":
        bad.write_text("[1, 2]")
        argv[1] = str(bad)
    elif case == "classes":
        write_stats(Path(a), [1] * 5, [1.0] * 5, ["x", "c2", "c9", "c4", "c5"])
    elif case == "width":
        write_stats(bad, [1] * 3, [1.0] * 3)
        argv[1] = str(bad)
    elif case == "stage":
        argv += ["--stage", "1"]
    assert main(argv) == 2
    assert capsys.readouterr().err.startswith(message.format(a=a, bad=bad))
    assert not (tmp_path / "g.png").exists()


def test_plot_reads_the_categories_of_a_full_annotation_file(tmp_path, plot_inputs):
    from lt_bench.detection.analysis.positive_gradients import analyse
    a, b, ann = plot_inputs
    full = tmp_path / "lvis_train.json"
    full.write_text(json.dumps({"images": [{"id": 1}], "annotations": [{"id": 1, "image_id": 1, "category_id": 2}],
                                "categories": json.loads(Path(ann).read_text())}))
    assert analyse([a, b], str(full))["order"] == analyse([a, b], ann)["order"] == [2, 4, 9, 5, 7]
