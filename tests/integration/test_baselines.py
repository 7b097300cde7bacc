"""The field's baselines and the paper's experiment through run.py: each one-stage loss learns on
digits-LT, and one Table 4 cell of ``+experiment=gol_table4`` runs end to end into the
leaderboard beside the paper."""
import json

import pytest

from lt_bench.data.synthetic import write_cifar
from lt_bench.leaderboard import leaderboard_text
from tests.helpers.runs import results, run_py

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("loss,method", [("ldam_drw", "ldam_drw"), ("drw", "drw"),
                                         ("balanced_softmax", "balanced_softmax"),
                                         ("logit_adjusted", "logit_adjusted"), ("cb_focal", "cb_focal")])
def test_one_stage_baseline_learns(tmp_path, loss, method):
    out = tmp_path / "run"
    proc = run_py("stage=1", f"stage1={loss}", "stage1.epochs=20", "stage1.milestones=[12,16]",
                  "stage1.reference_epochs=20", "device=cpu", "progress=false", "plots=false", f"out_dir={out}",
                  cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [record] = results(out)
    assert (record["stage"], record["method"]) == (1, method)
    assert record["top1"] > 60                    # 10 digit classes: chance is 10%
    assert record["best_select"] == "test" and record["best_top1"] >= record["top1"]
    if loss in ("ldam_drw", "drw"):
        assert record["drw_epoch"] == 12          # from the first lr decay


def test_gol_table4_cell_runs_into_the_leaderboard(tmp_path):
    """The CIFAR-100-LT imbalance-100 cell of Table 4 on synthetic CIFAR-100 pickles, shortened."""
    # 100 per class: at imbalance 100 the rarest class keeps int(100 / 100) = 1 image (30 would leave none)
    write_cifar(tmp_path / "cifar", "cifar100", train_per_class=100, test_per_class=4)
    out = tmp_path / "cell"
    proc = run_py("+experiment=gol_table4", "+table4=cifar100lt_ib100", f"data.root={tmp_path / 'cifar'}",
                  "data.verify_md5=false", "data.num_workers=0", "data.autoaugment=false",
                  "stage1.epochs=3", "stage2.epochs=2", "device=cpu", "progress=false", "plots=false",
                  f"out_dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage1, stage2 = results(out)
    assert (stage2["task"], stage2["imbalance"], stage2["method"]) == ("cifar100lt", 100, "gumbel")
    assert "gradient=authors" in stage2["activation"] and stage2["best_select"] == "test"
    assert stage2["best_epoch"] in (1, 2) and stage2["num_eval"] == 400
    cells = json.loads(leaderboard_text([out], "json"))
    [cell] = [c for c in cells if c["row"] == "gumbel [best@test] (stage 2)" and c["metric"] == "top1"
              and c["imbalance"] == 100]
    assert cell["paper"] == 45.5 and cell["delta"] == pytest.approx(stage2["best_top1"] - 45.5)
