"""benchmarks/gpu_check.py's pure parts: the tolerance checks refuse wrong losses and gradients,
the Gumbel reference is the closed form, the budget skips, result files are never replaced, and
the Markdown of a dry run says that its numbers are not benchmark figures.  (The whole dry run:
tests/integration/test_gpu_check.py.)"""
import importlib.util
import math
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
import torch

from tests.conftest import ROOT


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module          # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gc = _load()


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.fixture(scope="module")
def model():
    from lt_bench.models import build_model
    torch.manual_seed(0)
    return build_model("resnet8", 10)


def test_bf16_loss_passes_and_wrong_losses_are_refused(model):
    """The same batch and weights: the CPU bf16-autocast loss and classifier gradient are within
    the stated tolerances of the float32 ones; a loss 2 % off, a sum instead of a mean, a NaN, a
    gradient for other labels or one still carrying a GradScaler's scale is not."""
    from lt_bench.activations import build_activation
    images, labels = _batch()
    ce = build_activation("softmax").loss
    cpu = torch.device("cpu")
    ref, ref_grad, _, _ = gc.amp_forward_backward(model, images, labels, ce, cpu, None, False)
    amp, amp_grad, logits_dtype, scale = gc.amp_forward_backward(model, images, labels, ce, cpu, "bf16", False)
    assert logits_dtype == torch.bfloat16 and amp.dtype == torch.float32      # autocast was on; the loss float32
    assert scale == 1.0                                                       # bf16: no GradScaler
    assert 0 < gc.relative_difference(float(amp), float(ref)) <= gc.LOSS_RTOL["bf16"]
    assert gc.within_rtol(float(amp), float(ref), gc.LOSS_RTOL["bf16"])
    assert gc.cosine_similarity(amp_grad, ref_grad) >= gc.GRAD_COSINE_MIN
    assert gc.relative_difference(float(amp_grad.norm()), float(ref_grad.norm())) <= gc.GRAD_NORM_RTOL["bf16"]

    wrong = {"2 % off": float(amp) * 1.02, "sum over the batch": float(amp) * len(labels), "NaN": math.nan,
             "inf": math.inf}
    for why, value in wrong.items():
        assert not gc.within_rtol(value, float(ref), gc.LOSS_RTOL["bf16"]), why
    assert not gc.within_rtol(float(ref), math.nan, 1.0)                # a NaN reference is never matched
    # at random init every label gives a loss near log C; the gradient tells other labels apart
    other_grad = gc.amp_forward_backward(model, images, (labels + 1) % 10, ce, cpu, "bf16", False)[1]
    assert gc.cosine_similarity(other_grad, ref_grad) < gc.GRAD_COSINE_MIN
    scaled = amp_grad * 65536.0                                          # scaler.unscale_ forgotten
    assert gc.cosine_similarity(scaled, ref_grad) >= gc.GRAD_COSINE_MIN
    assert gc.relative_difference(float(scaled.norm()), float(ref_grad.norm())) > gc.GRAD_NORM_RTOL["fp16"]


def test_fp16_overflowing_first_steps_are_repeated_at_a_smaller_scale():
    """fp16 (CPU autocast here, stage 2): the Gumbel gradient at GradScaler's first scale (65536)
    overflows float16, so the step is repeated at half the scale, as training skips such steps;
    the unscaled gradient is then the float32 one within the fp16 tolerances."""
    from lt_bench.activations import build_activation
    from lt_bench.models import build_model
    torch.manual_seed(0)
    model = build_model("resnet32", 100)
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 100, (16,), generator=g)
    loss_fn = build_activation("gumbel").loss
    cpu = torch.device("cpu")
    ref, ref_grad, _, _ = gc.amp_forward_backward(model, images, labels, loss_fn, cpu, None, True)
    amp, grad, logits_dtype, scale = gc.amp_forward_backward(model, images, labels, loss_fn, cpu, "fp16", True)
    assert logits_dtype == torch.float16 and scale < 65536.0
    assert bool(torch.isfinite(grad).all())
    assert gc.within_rtol(float(amp), float(ref), gc.LOSS_RTOL["fp16"])
    assert gc.cosine_similarity(grad, ref_grad) >= gc.GRAD_COSINE_MIN
    assert gc.relative_difference(float(grad.norm()), float(ref_grad.norm())) <= gc.GRAD_NORM_RTOL["fp16"]


def test_cosine_similarity():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert gc.cosine_similarity(a, 2 * a) == pytest.approx(1.0)
    assert gc.cosine_similarity(a, -a) == pytest.approx(-1.0)
    assert math.isnan(gc.cosine_similarity(a, torch.tensor([1.0, math.nan, 0.0])))
    assert math.isnan(gc.cosine_similarity(a, torch.zeros(3)))


def test_tensor_mismatch_counts_nans_wrong_infinities_and_relative_errors():
    expected = torch.tensor([1.0, math.inf, -math.inf, 0.0, 100.0])
    assert gc.tensor_mismatch(expected.clone(), expected, 1e-5)["mismatches"] == 0
    within = torch.tensor([1.0, math.inf, -math.inf, 0.0, 100.0009])              # 9e-6 relative
    assert gc.tensor_mismatch(within, expected, 1e-5)["mismatches"] == 0
    out = gc.tensor_mismatch(torch.tensor([1.0, math.nan, math.inf, 0.0, 100.1]), expected, 1e-5)
    assert out["mismatches"] == 3 and out["nan"] == 1              # NaN, +inf for -inf, 1e-3 relative
    assert [f["index"] for f in out["first"]] == [1, 2, 4]
    assert out["max_rel_error"] == pytest.approx(1e-3, rel=1e-3)


def test_gumbel_reference_is_the_activations_closed_form():
    """The float64 reference equals lt_bench's Gumbel loss and gradient at moderate logits (in
    float64 both are exact), and its clamp passes no gradient at or beyond the bounds."""
    from lt_bench.activations import build_activation
    z = torch.tensor([[-3.5, -1.0, 0.0, 2.0, 9.0], [-6.0, -4.0, 10.0, 12.0, 0.5]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]], dtype=torch.float64)
    for clamp in (None, (-4.0, 10.0)):
        ref_loss, ref_grad = gc.gumbel_reference(z, targets, clamp)
        zz = z.clone().requires_grad_(True)
        loss = build_activation("gumbel", clamp=clamp, gradient="exact").elementwise_loss(zz, targets)
        loss.sum().backward()
        assert torch.allclose(loss.double(), ref_loss, rtol=1e-6), clamp
        assert torch.allclose(zz.grad.double(), ref_grad, rtol=1e-5, atol=1e-12), clamp
    _, grad = gc.gumbel_reference(z, targets, (-4.0, 10.0))
    assert grad[1, 0] == 0 and grad[1, 1] == 0 and grad[1, 2] == 0 and grad[1, 3] == 0


def test_gumbel_autocast_step_holds_on_cpu(tmp_path):
    """The step itself, in this process on CPU (bf16): every check holds, fp16 skipped with its reason."""
    step = next(s for s in gc.STEPS if s.name == "gumbel_autocast")
    ctx = gc.StepContext("gumbel_autocast", gc.DRY, True, "cpu", "eager", deadline=1e18, workdir=tmp_path,
                         result_file=tmp_path / "result.json")
    result = gc.execute(step, ctx)
    assert result["status"] == "ok", result.get("error")
    assert len(result["checks"]) >= 15 and all(c["ok"] for c in result["checks"])
    assert "CUDA" in result["parts_skipped"]["fp16"]


def test_gumbel_autocast_step_fp16_logits_on_cpu(tmp_path, monkeypatch):
    """The fp16 half of the step (CUDA's), with CPU autocast: gradients beyond float16's range
    (-exp(30) at a positive z = -30) are -inf in fp16 for the reference and the loss alike, no NaN."""
    monkeypatch.setattr(gc, "_amp_modes", lambda ctx: ["fp16"])
    step = next(s for s in gc.STEPS if s.name == "gumbel_autocast")
    ctx = gc.StepContext("gumbel_autocast", gc.DRY, True, "cpu", "eager", deadline=1e18, workdir=tmp_path,
                         result_file=tmp_path / "result.json")
    result = gc.execute(step, ctx)
    assert result["status"] == "ok", result.get("error")
    assert sum(c["name"].startswith("fp16.") for c in result["checks"]) == 15


def _isolated(tmp_path, fn, cap):
    step = gc.Step("fake", fn, "a step for the test")
    ctx = gc.StepContext("fake", gc.DRY, True, "cpu", "eager", deadline=time.time() + cap, workdir=tmp_path,
                         result_file=tmp_path / "result.json")
    return gc.run_isolated(step, ctx, cap)


def _hangs(ctx):
    ctx.metric("before", 1.5, "s")
    ctx.check("a check before", True, 1, 1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    ctx.register_session(sleeper.pid)
    time.sleep(60)


def _runs_too_long(ctx):
    code, _ = gc.run_command(ctx, [sys.executable, "-c", "import time; time.sleep(60)"], "sleeper")
    ctx.metric("exit_status", code)


def _dies(ctx):
    ctx.metric("before", 2.0)
    os._exit(3)


def _fails_a_check(ctx):
    ctx.check("loss rel. diff", False, 0.5, 0.01)
    ctx.check("another", True, 1, 1)


def _skips(ctx):
    raise gc.Skip("1 GPU visible")


def test_a_step_past_its_cap_is_stopped_with_what_it_started_and_keeps_its_measurements(tmp_path):
    started = time.perf_counter()
    result = _isolated(tmp_path, _hangs, cap=2)
    assert time.perf_counter() - started < 20
    assert result["status"] == "timeout" and "time cap of 2 s" in result["error"]
    assert result["metrics"]["before"]["value"] == 1.5 and result["checks"][0]["ok"]
    sleeper = int((tmp_path / "pgids").read_text().split()[0])
    time.sleep(0.5)
    assert not _running(sleeper)                        # the process it started was killed with it


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed orphan waits for init to reap it)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_run_that_outlives_the_step_is_killed_before_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(gc, "SUBPROCESS_MARGIN_S", 0.5)      # the forked step sees it too
    result = _isolated(tmp_path, _runs_too_long, cap=2.5)
    assert result["status"] == "ok" and result["metrics"]["exit_status"]["value"] == -9
    assert "killed after 2 s" in result["notes"][0]


def _parts(ctx):
    with ctx.part("bf16"):
        raise RuntimeError("CUDA error: an illegal memory access")
    with ctx.part("fp16"):
        raise gc.Skip("fp16 needs CUDA")
    with ctx.part("run"):
        ctx.metric("after", 3.0)


def test_a_failing_part_is_recorded_and_the_next_part_runs(tmp_path):
    step = gc.Step("fake", _parts, "parts")
    ctx = gc.StepContext("fake", gc.DRY, True, "cpu", "eager", deadline=1e18, workdir=tmp_path,
                         result_file=tmp_path / "result.json")
    result = gc.execute(step, ctx)
    assert result["status"] == "failed" and result["error"].startswith("bf16: ran without error")
    assert "illegal memory access" in result["checks"][0]["detail"]
    assert result["parts_skipped"] == {"fp16": "fp16 needs CUDA"} and result["metrics"]["after"]["value"] == 3.0


def test_a_crashed_a_failed_and_a_skipped_step_are_recorded(tmp_path):
    died = _isolated(tmp_path / "a", _dies, cap=30) if (tmp_path / "a").mkdir() is None else None
    assert died["status"] == "failed" and "exit status 3" in died["error"] and died["metrics"]["before"]["value"] == 2
    failed = _isolated(tmp_path / "b", _fails_a_check, cap=30) if (tmp_path / "b").mkdir() is None else None
    assert failed["status"] == "failed" and failed["error"] == "loss rel. diff: 0.5 (limit 0.01)"
    skipped = _isolated(tmp_path / "c", _skips, cap=30) if (tmp_path / "c").mkdir() is None else None
    assert skipped["status"] == "skipped" and skipped["reason"] == "1 GPU visible"


def test_nonfinite_numbers_finds_nested_values():
    record = {"top1": 50.0, "per_class": [1.0, math.nan], "nested": {"ece": math.inf, "ok": True, "n": 3}}
    assert gc.nonfinite_numbers(record) == ["per_class[1]=nan", "nested.ece=inf"]
    assert gc.nonfinite_numbers([{"a": 1.0, "b": "text", "c": None}]) == []


def test_budget_skips_a_step_that_no_longer_fits():
    assert gc.budget_decision(10, 480, 180) == (180, None)
    cap, reason = gc.budget_decision(400, 480, 180)
    assert cap == 80 and reason is None
    cap, reason = gc.budget_decision(475, 480, 180)
    assert cap == 0 and "budget exhausted" in reason and "475 s" in reason


def test_result_files_are_never_replaced(tmp_path):
    now = datetime(2026, 12, 2, 21, 0, 0, tzinfo=timezone.utc)
    json_path, md_path = gc.output_paths(tmp_path, True, None, now, force=False)
    assert json_path.name == "gpu_check_dry-run_20261202T210000Z.json" and md_path.suffix == ".md"
    assert gc.output_paths(tmp_path, False, "h200", now, False)[0].name == "gpu_check_h200_20261202T210000Z.json"
    json_path.write_text("{}")
    with pytest.raises(FileExistsError, match="refusing to replace"):
        gc.output_paths(tmp_path, True, None, now, force=False)
    assert gc.output_paths(tmp_path, True, None, now, force=True)[0] == json_path


def _report(mode):
    step_ok = {"name": "throughput_synthetic", "status": "ok", "seconds": 1.5, "checks": [
        {"name": "loss | finite", "ok": True, "value": 2.3, "limit": "finite"}],
        "metrics": {"train_eager.images_per_s": {"value": 2.2, "unit": "images/s", "label": "training, eager"}},
        "info": {}, "notes": [], "parts_skipped": {}}
    step_skipped = {"name": "ddp", "status": "skipped", "reason": "1 GPU visible", "seconds": 0.1, "checks": [],
                    "metrics": {}, "info": {}, "notes": [], "parts_skipped": {}}
    return {"mode": mode, "device": "cpu" if mode == "dry-run" else "cuda", "started": "2026-12-02 21:00:00Z",
            "command": "python benchmarks/gpu_check.py", "wall_seconds": 50.0, "budget_s": 480.0, "git_rev": "abc",
            "tolerances": gc.TOLERANCES, "steps": [step_ok, step_skipped]}


def test_markdown_states_a_dry_run_is_no_benchmark():
    text = gc.render_markdown(_report("dry-run"))
    assert "DRY RUN" in text and "not benchmark figures" in text
    assert "| step | status | seconds | result |" in text
    assert "| ddp | skipped | 0.1 | skipped: 1 GPU visible |" in text
    assert "loss \\| finite" in text                                    # cells escape '|'
    assert all(f"`{name}`" in text for name in gc.TOLERANCES)
    full = gc.render_markdown(_report("full"))
    assert "DRY RUN" not in full and "not benchmark figures" not in full


def test_usage_errors():
    with pytest.raises(SystemExit):
        gc.parse_args(["--steps", "environment,warp_drive"])
    with pytest.raises(SystemExit):
        gc.parse_args(["--device", "cpu"])                 # the full sizes need a GPU
    args = gc.parse_args(["--dry-run", "--steps", "ddp,environment"])
    assert args.steps == ["ddp", "environment"] and args.compile_backend == "eager"
    assert gc.parse_args([]).compile_backend == "inductor"
