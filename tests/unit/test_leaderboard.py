"""The leaderboard against numbers computed here by hand, in every output format."""
import csv
import io
import json
import statistics
from html.parser import HTMLParser

import pytest
from omegaconf import OmegaConf

from lt_bench.errors import ConfigError, DataError
from lt_bench.leaderboard import (build_leaderboard, collect_records, leaderboard_text, load_references, main,
                                  run_leaderboard)
from tests.helpers.tables import md_table

GUMBEL_C100 = [45.0, 46.5, 46.5]          # three seeds of one configuration: mean 46.0
STAGE1_C100 = [38.0, 38.5, 39.5]
LVIS_GUMBEL_AP = [19.4, 19.8]


def cls(stage, method, top1, setup, seed=0, task="cifar100lt", imbalance=100, model="resnet32",
        created="2024-05-01T10:00:00+00:00", **extra):
    return {"task": task, "imbalance": imbalance, "model": model, "stage": stage, "method": method,
            "top1": top1, "top5": top1 + 20, "many": top1 + 10, "medium": top1, "few": None, "ece": 5.0 + seed,
            "seed": seed, "config_hash": f"{setup}-{seed}", "setup_hash": setup, "created": created,
            "eval_split": "test",
            # stage 2 as the paper's protocol: the best test epoch (here the last), beside the last
            **({"best_top1": top1, "best_many": top1 + 10, "best_medium": top1, "best_few": None,
                "best_select": "test", "best_epoch": 15} if stage == 2 else {}), **extra}


def det(method, ap, setup, seed=0, model="mask_rcnn_r50", **extra):
    return {"kind": "detection", "task": "lvis", "version": "v1", "model": model, "stage": None,
            "method": method, "AP": ap, "APr": ap - 14, "APc": ap - 2, "APf": ap + 8, "APbox": ap + 1,
            "seed": seed, "config_hash": f"{setup}-{seed}", "setup_hash": setup,
            "created": "2024-05-02T00:00:00+00:00", **extra}


@pytest.fixture
def runs(tmp_path):
    """runs/<folder>/results.json, as the pipeline writes them."""
    folders = {
        **{f"c100_gumbel_s{s}": [cls(1, "softmax", STAGE1_C100[s], "aaaa1111", s),
                                 cls(2, "gumbel", GUMBEL_C100[s], "aaaa1111", s)] for s in range(3)},
        # another configuration in the same cells, run later: its own rows
        "c100_gumbel_lr": [cls(1, "softmax", 37.0, "cccc2222", created="2024-06-01T00:00:00+00:00"),
                           cls(2, "gumbel", 44.0, "cccc2222", created="2024-06-01T00:00:00+00:00")],
        "c100_softmax": [cls(2, "softmax", 42.0, "bbbb3333")],
        "c100_ib200": [cls(2, "gumbel", 41.0, "dddd4444", imbalance=200)],     # no stage-1 record there
        "inlt": [cls(2, "gumbel", 48.7, "eeee5555", task="imagenetlt", imbalance=256.0, model="resnet50")],
        "nested/lvis_s0": [det("gumbel", LVIS_GUMBEL_AP[0], "ffff6666", 0)],
        "nested/lvis_s1": [det("gumbel", LVIS_GUMBEL_AP[1], "ffff6666", 1)],
        # scored as the paper's sigmoid rows: a softmax over the C + 1 logits
        "nested/lvis_sigmoid": [det("sigmoid", 16.0, "9999aaaa", activation="sigmoid", scoring="softmax")],
    }
    root = tmp_path / "runs"
    for name, records in folders.items():
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(records))
    return root


def csv_rows(text):
    return list(csv.DictReader(io.StringIO(text)))


def find(cells, row, task, metric="top1", **where):
    hits = [c for c in cells if c["row"] == row and c["task"] == task and c["metric"] == metric
            and all(c[k] == v for k, v in where.items())]
    assert len(hits) == 1, (row, task, metric, where, hits)
    return hits[0]



def test_collect_records_order_source_and_errors(runs, tmp_path):
    records = collect_records([runs])
    sources = [r["source"] for r in records]
    assert sources == sorted(sources) and len(records) == 3 * 2 + 2 + 1 + 1 + 1 + 3
    assert sources[0] == str(runs / "c100_gumbel_lr" / "results.json")
    one = runs / "inlt" / "results.json"
    assert [r["top1"] for r in collect_records([one, runs / "inlt"])] == [48.7]     # named twice, read once
    with pytest.raises(DataError, match="nowhere: no such file"):
        collect_records([tmp_path / "nowhere"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no results.json"):
        collect_records([tmp_path / "empty"])


def test_seeds_are_averaged_with_sample_std_and_paper_delta(runs):
    cells = json.loads(leaderboard_text([runs], "json"))
    gumbel = find(cells, "gumbel [best@test] (stage 2)", "cifar100lt", imbalance=100)
    assert gumbel["n"] == 3 and gumbel["setup_hash"] == "aaaa1111"
    assert gumbel["mean"] == 46.0                                       # 2 decimals, as the text shows
    assert gumbel["std"] == round(statistics.stdev(GUMBEL_C100), 2) == 0.87
    assert gumbel["paper"] == 45.5 and gumbel["delta"] == pytest.approx(0.5)
    stage1 = find(cells, "softmax [last] (stage 1)", "cifar100lt", imbalance=100)
    assert (stage1["n"], stage1["paper"], stage1["delta"]) == (3, None, None)    # the paper is stage 2
    assert stage1["std"] == round(statistics.stdev(STAGE1_C100), 2)
    single = find(cells, "softmax [best@test] (stage 2)", "cifar100lt", imbalance=100)
    assert (single["n"], single["std"]) == (1, None) and single["delta"] == pytest.approx(42.0 - 42.4)
    # fixed split: the paper's ImageNet-LT cell matches our imbalance 256.0
    inlt = find(cells, "gumbel [best@test] (stage 2)", "imagenetlt", imbalance=256.0)
    assert inlt["paper"] == 48.2 and inlt["delta"] == pytest.approx(0.5)
    assert find(cells, "gumbel [best@test] (paper)", "imagenetlt")["mean"] == 48.2


def test_repeats_of_one_seed_count_once(runs):
    """A sweep over stage-2 variants trains the same stage 1 (same setup, same seed) per
    variant: those copies are one sample (averaged), not extra seeds."""
    for variant, top1 in (("a", STAGE1_C100[0] + 1.0), ("b", STAGE1_C100[1])):
        (runs / f"rerun_{variant}").mkdir()
        seed = 0 if variant == "a" else 1
        (runs / f"rerun_{variant}" / "results.json").write_text(json.dumps([cls(1, "softmax", top1, "aaaa1111", seed)]))
    stage1 = find(json.loads(leaderboard_text([runs], "json")), "softmax [last] (stage 1)", "cifar100lt", imbalance=100)
    per_seed = [STAGE1_C100[0] + 0.5, STAGE1_C100[1], STAGE1_C100[2]]
    assert stage1["n"] == 3
    assert stage1["mean"] == round(statistics.mean(per_seed), 2)
    assert stage1["std"] == round(statistics.stdev(per_seed), 2)


def test_second_configuration_gets_its_own_row(runs):
    cells = json.loads(leaderboard_text([runs], "json"))
    extra = find(cells, "gumbel [best@test] (stage 2) [cfg cccc22]", "cifar100lt", imbalance=100)
    assert (extra["mean"], extra["n"], extra["setup_hash"]) == (44.0, 1, "cccc2222")
    assert extra["delta"] == pytest.approx(44.0 - 45.5)
    assert find(cells, "softmax [last] (stage 1) [cfg cccc22]", "cifar100lt", imbalance=100)["mean"] == 37.0
    ours = [c for c in cells if c["kind"] == "classification" and not c["reference"] and c["metric"] == "top1"]
    assert sum(c["n"] or 0 for c in ours) == 3 * 2 + 2 + 1 + 1 + 1     # every record counted once


def test_markdown_table(runs):
    text = leaderboard_text([runs])
    assert text.index("### classification") < text.index("### detection")
    rows = md_table(text, "classification")
    assert rows[0] == ["method", "cifar100lt ib=100 resnet32", "cifar100lt ib=200 resnet32",
                       "imagenetlt ib=256 resnet50"]
    assert rows[1] == ["---", "---:", "---:", "---:"]
    body = {r[0]: r[1:] for r in rows[2:]}
    assert list(body) == ["softmax [last] (stage 1)", "softmax [last] (stage 1) [cfg cccc22]",
                          "gumbel [best@test] (stage 2)", "gumbel [best@test] (stage 2) [cfg cccc22]",
                          "softmax [best@test] (stage 2)", "cb_focal [best@test] (paper, stage 1)",
                          "ldam_drw [best@test] (paper, stage 1)", "softmax [best@test] (paper, stage 1)",
                          "gumbel [best@test] (paper)", "softmax [best@test] (paper)"]
    std = statistics.stdev(GUMBEL_C100)
    assert body["gumbel [best@test] (stage 2)"] == [f"46.00 ± {std:.2f} (n=3) Δ +0.50", "41.00 (n=1) Δ -0.50",
                                                    "48.70 (n=1) Δ +0.50"]
    # the last epoch is not the paper's protocol (its ERM row is the best test epoch): no delta
    assert body["softmax [last] (stage 1)"] == [f"38.67 ± {statistics.stdev(STAGE1_C100):.2f} (n=3)", "-", "-"]
    assert body["softmax [best@test] (paper, stage 1)"] == ["38.32", "-", "-"]
    assert body["softmax [best@test] (stage 2)"] == ["42.00 (n=1) Δ -0.40", "-", "-"]
    assert body["gumbel [best@test] (paper)"] == ["45.50", "41.50", "48.20"]
    assert body["softmax [best@test] (paper)"] == ["42.40", "38.30", "45.20"]


def test_detection_table(runs):
    cells = json.loads(leaderboard_text([runs / "nested"], "json"))
    assert {c["kind"] for c in cells} == {"detection"}
    assert sorted({c["metric"] for c in cells}) == sorted(["AP", "APr", "APc", "APf", "APbox"])
    ap = find(cells, "gumbel", "lvis", metric="AP", version="v1", model="mask_rcnn_r50")
    assert ap["mean"] == pytest.approx(statistics.mean(LVIS_GUMBEL_AP)) and ap["n"] == 2
    assert ap["std"] == round(statistics.stdev(LVIS_GUMBEL_AP), 2)
    assert ap["delta"] == pytest.approx(statistics.mean(LVIS_GUMBEL_AP) - 19.0)
    apr = find(cells, "gumbel", "lvis", metric="APr", version="v1")
    assert apr["delta"] == pytest.approx(statistics.mean(LVIS_GUMBEL_AP) - 14 - 4.9)
    assert find(cells, "sigmoid [softmax scores] (paper)", "lvis", metric="APbox")["mean"] == 17.2
    # compared with the paper only when measured as the paper: the same scores, the whole val set
    assert find(cells, "sigmoid [softmax scores]", "lvis", metric="APf")["delta"] == pytest.approx(24.0 - 27.3)
    rows = md_table(leaderboard_text([runs / "nested"]), "detection")
    # the column's label heads its first metric only, not every one
    assert rows[0][1:] == ["lvis v1 mask_rcnn_r50 AP", "APr", "APc", "APf", "APbox"]
    assert [r[0] for r in rows[2:]] == ["gumbel", "sigmoid [softmax scores]", "gumbel (paper)",
                                        "sigmoid [softmax scores] (paper)", "softmax (paper)"]


def test_detection_runs_meet_the_paper_only_when_measured_as_the_paper(tmp_path):
    """A sigmoid run scored by sigmoid, or one evaluated on a val subset, is its own row with no Δ."""
    records = [det("sigmoid", 16.0, "a1", activation="sigmoid", scoring="softmax"),
               det("sigmoid", 17.0, "b2", activation="sigmoid", scoring="sigmoid"),
               det("gumbel", 30.0, "c3", activation="gumbel", scoring="gumbel", eval_subset=True, eval_images=50),
               det("gumbel", 19.5, "d4", activation="gumbel", scoring="gumbel", eval_subset=False)]
    (tmp_path / "results.json").write_text(json.dumps(records))
    cells = json.loads(leaderboard_text([tmp_path], "json"))
    assert find(cells, "sigmoid [softmax scores]", "lvis", metric="AP")["delta"] == pytest.approx(16.0 - 16.4)
    own = find(cells, "sigmoid", "lvis", metric="AP")
    assert own["mean"] == 17.0 and own["paper"] is None and own["delta"] is None
    subset = find(cells, "gumbel [val subset of 50 images]", "lvis", metric="AP")
    assert subset["mean"] == 30.0 and subset["delta"] is None
    assert find(cells, "gumbel", "lvis", metric="AP")["delta"] == pytest.approx(19.5 - 19.0)


def test_metrics_option(runs):
    metrics = ("top1", "many", "medium", "few", "ece")
    cells = json.loads(leaderboard_text([runs / "c100_gumbel_s0", runs / "c100_gumbel_s1",
                                         runs / "c100_gumbel_s2"], "json", metrics=metrics))
    assert [c["metric"] for c in cells[:5]] == list(metrics)
    # the best epoch's record holds test top-1 and shot groups only; ECE is the last epoch's
    assert find(cells, "gumbel [best@test] (stage 2)", "cifar100lt", metric="ece")["mean"] is None
    last = json.loads(leaderboard_text([runs / f"c100_gumbel_s{s}" for s in range(3)], "json", metrics=metrics,
                                       epoch="last"))
    ece = find(last, "gumbel [last] (stage 2)", "cifar100lt", metric="ece")
    assert ece["mean"] == pytest.approx(statistics.mean([5.0, 6.0, 7.0])) and ece["paper"] is None
    few = find(cells, "gumbel [best@test] (stage 2)", "cifar100lt", metric="few")
    assert (few["mean"], few["n"]) == (None, 0)                              # every value null
    assert find(cells, "gumbel [best@test] (paper)", "cifar100lt", metric="many")["mean"] is None
    rows = md_table(leaderboard_text([runs / "c100_gumbel_s0"], metrics="top1,many,medium,few,ece"),
                    "classification")
    assert rows[0][1:] == ["cifar100lt ib=100 resnet32 top1", "many", "medium", "few", "ece"]
    with pytest.raises(ConfigError, match="'top3'"):
        leaderboard_text([runs], metrics=["top1", "top3"])
    with pytest.raises(ConfigError, match="'xls'"):
        leaderboard_text([runs], "xls")


def test_csv_parses_back(runs):
    rows = csv_rows(leaderboard_text([runs], "csv"))
    assert list(rows[0]) == ["row", "kind", "task", "imbalance", "version", "model", "metric", "mean", "std", "n",
                             "paper", "delta", "reference", "setup_hash"]
    # 2 decimals, as the text formats show; an integral imbalance as an integer
    gumbel = find(rows, "gumbel [best@test] (stage 2)", "cifar100lt", imbalance="100")
    assert [gumbel[k] for k in ("mean", "std", "n", "paper", "delta")] == \
        ["46.00", f"{statistics.stdev(GUMBEL_C100):.2f}", "3", "45.50", "0.50"]
    missing = find(rows, "softmax [last] (stage 1)", "cifar100lt", imbalance="200")
    assert [missing[k] for k in ("mean", "std", "n", "paper", "delta")] == ["", "", "", "", ""]
    paper_only = find(rows, "softmax [best@test] (stage 2)", "cifar100lt", imbalance="200")    # no run, paper known
    assert (paper_only["mean"], paper_only["paper"]) == ("", "38.30")
    assert find(rows, "gumbel [best@test] (stage 2)", "imagenetlt")["imbalance"] == "256"
    ap = find(rows, "gumbel", "lvis", metric="APbox", version="v1")
    assert ap["imbalance"] == "" and float(ap["mean"]) == pytest.approx(statistics.mean(LVIS_GUMBEL_AP) + 1)
    assert {r["reference"] for r in rows if r["row"].endswith("(paper)")} == {"True"}


def test_latex_parses_back(runs):
    text = leaderboard_text([runs], "latex")
    tables = text.split(r"\end{tabular}")[:-1]
    assert len(tables) == 2
    lines = tables[0].splitlines()
    assert r"\toprule" in lines and r"\bottomrule" in lines
    body = lines[lines.index(r"\midrule") + 1:lines.index(r"\bottomrule")]
    assert len(body) == 10 and all(line.endswith(r"\\") for line in body)
    assert lines[lines.index(r"\toprule") + 1].startswith(r"method & cifar100lt ib=100 resnet32 &")
    assert body[2].split(" & ")[1] == rf"46.00 $\pm$ {statistics.stdev(GUMBEL_C100):.2f} (n=3) $\Delta$ +0.50"
    assert body[8].startswith(r"\textit{gumbel [best@test] (paper)} & 45.50 &")
    det_lines = tables[1].splitlines()
    assert r"lvis v1 mask\_rcnn\_r50" in tables[1] and "mask_rcnn" not in tables[1]
    assert det_lines[det_lines.index(r"\midrule") - 1] == "method & AP & APr & APc & APf & APbox \\\\"
    det_body = det_lines[det_lines.index(r"\midrule") + 1:det_lines.index(r"\bottomrule")]
    assert len(det_body) == 5


class CellTexts(HTMLParser):
    """Tables as lists of rows of cell texts, head and body apart."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"thead": [], "tbody": []})
        elif tag in ("thead", "tbody"):
            self.part = tag
        elif tag == "tr":
            self.tables[-1][self.part].append([])
        elif tag in ("th", "td"):
            self.cell = ""

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self.tables[-1][self.part][-1].append(self.cell)
            self.cell = None


def test_html_parses_back(runs):
    parser = CellTexts()
    parser.feed(leaderboard_text([runs], "html"))
    classification, detection = parser.tables
    assert classification["thead"] == [["method", "cifar100lt ib=100 resnet32", "cifar100lt ib=200 resnet32",
                                         "imagenetlt ib=256 resnet50"]]
    body = {r[0]: r[1:] for r in classification["tbody"]}
    assert len(classification["tbody"]) == 10
    assert body["gumbel [best@test] (stage 2) [cfg cccc22]"] == ["44.00 (n=1) Δ -1.50", "-", "-"]
    assert body["softmax [best@test] (paper)"] == ["42.40", "38.30", "45.20"]
    assert detection["thead"] == [["method", "lvis v1 mask_rcnn_r50"], ["AP", "APr", "APc", "APf", "APbox"]]
    assert [r[0] for r in detection["tbody"]][:2] == ["gumbel", "sigmoid [softmax scores]"]


def test_cli_and_config_entry_points(runs, tmp_path, capsys):
    out = tmp_path / "board" / "leaderboard.csv"
    assert main([str(runs), "--format", "csv", "--out", str(out), "--metrics", "top1,ece"]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_text() == leaderboard_text([runs], "csv", metrics=["top1", "ece"])
    assert {r["metric"] for r in csv_rows(out.read_text())} == {"top1", "ece", "AP", "APr", "APc", "APf", "APbox"}
    assert main([str(runs / "inlt")]) == 0
    assert "| gumbel [best@test] (stage 2) | 48.70 (n=1) Δ +0.50 |" in capsys.readouterr().out
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "DataError" in capsys.readouterr().err
    cfg = OmegaConf.create({"leaderboard": {"paths": [str(runs)], "format": "json", "out": str(tmp_path / "lb.json"),
                                            "metrics": None}})
    assert run_leaderboard(cfg) == 0
    assert json.loads((tmp_path / "lb.json").read_text()) == json.loads(leaderboard_text([runs], "json"))
    with pytest.raises(ConfigError, match="leaderboard.paths"):
        run_leaderboard(OmegaConf.create({"leaderboard": {"paths": [], "format": "md", "out": None, "metrics": None}}))


def test_reference_file_is_well_formed():
    entries = load_references()
    cifar = {(e["imbalance"], e["method"]): e["top1"] for e in entries if e["task"] == "cifar100lt" and e["stage"] == 2}
    assert cifar == {(50, "softmax"): 46.2, (100, "softmax"): 42.4, (200, "softmax"): 38.3,
                     (50, "gumbel"): 49.0, (100, "gumbel"): 45.5, (200, "gumbel"): 41.5}
    gol = [e for e in entries if e["model"] == "gol_r101"]
    assert [(e["AP"], e["APr"], e["APc"], e["APf"], e["APbox"]) for e in gol] == [(29.0, 22.8, 29.0, 31.7, 29.2)]
    assert all(e.get("table") for e in entries)


def test_epoch_protocols_and_deltas_like_with_like(tmp_path):
    """A run's best epoch on test meets the paper's best-test row; its last epoch and an epoch
    picked on val are rows of their own, with no delta against it."""
    on_test = cls(2, "gumbel", 44.0, "t1")
    on_test.update(best_top1=45.0, best_epoch=9)
    on_val = cls(2, "gumbel", 44.5, "v1", task="imagenetlt", imbalance=256.0, model="resnet50")
    on_val.update(best_top1=47.0, best_select="val", best_epoch=7)
    (tmp_path / "results.json").write_text(json.dumps([on_test, on_val]))
    cells = lambda epoch: json.loads(leaderboard_text([tmp_path], "json", epoch=epoch))  # noqa: E731
    auto = cells("auto")
    assert find(auto, "gumbel [best@test] (stage 2)", "cifar100lt")["delta"] == pytest.approx(45.0 - 45.5)
    val = find(auto, "gumbel [best@val] (stage 2)", "imagenetlt")
    assert (val["mean"], val["paper"], val["delta"]) == (47.0, None, None)
    last = cells("last")
    assert find(last, "gumbel [last] (stage 2)", "cifar100lt")["delta"] is None
    assert find(last, "gumbel [last] (stage 2)", "cifar100lt")["mean"] == 44.0
    both = {c["row"] for c in cells("both") if c["task"] == "cifar100lt" and c["mean"] is not None
            and not c["reference"]}
    assert both == {"gumbel [last] (stage 2)", "gumbel [best@test] (stage 2)"}
    with pytest.raises(ConfigError, match="epoch 'first'"):
        leaderboard_text([tmp_path], epoch="first")


@pytest.mark.parametrize("target,message", [("c100_softmax/results.json", "would replace run records"),
                                            ("elsewhere/results.json", "would replace run records"),
                                            ("c100_softmax", "is a folder")])
def test_the_leaderboard_never_replaces_its_input(runs, target, message):
    """Issue 15.5: --out naming a records file or a folder is refused, the records unchanged."""
    before = (runs / "c100_softmax" / "results.json").read_bytes()
    with pytest.raises(ConfigError, match=message):
        from lt_bench.leaderboard import write_leaderboard
        write_leaderboard([runs], "json", runs / target)
    assert main([str(runs), "--format", "json", "--out", str(runs / target)]) == 2
    assert (runs / "c100_softmax" / "results.json").read_bytes() == before


def test_markdown_escapes_text_cells(tmp_path):
    """Hostile input: a method name with |, a line break or HTML keeps the Markdown table whole
    and shows as text; numbers are unchanged; HTML and LaTeX stay escaped."""
    (tmp_path / "results.json").write_text(json.dumps([cls(2, "a|b\nc\r\n<script>&x", 40.0, "aaaa1111")]))
    text = leaderboard_text([tmp_path])
    assert "| a\\|b c &lt;script&gt;&amp;x [best@test] (stage 2) | 40.00 (n=1) |" in text.splitlines()
    assert "<script>" not in text and "\nc" not in text
    rows = md_table(text, "classification")
    assert {len(r) for r in rows} == {2}                                    # every row keeps its two cells
    assert "&lt;script&gt;" in leaderboard_text([tmp_path], "html") and "<script>" not in leaderboard_text(
        [tmp_path], "html")
    assert "a|b" in leaderboard_text([tmp_path], "latex")                   # LaTeX: | is no special character


def test_csv_neutralises_formulas_but_not_numbers(tmp_path):
    """OWASP CSV injection: text cells starting with = + - @ tab or CR get a leading quote;
    numbers (a negative delta, a number-like text) stay as they are."""
    records = [cls(2, '=HYPERLINK("http://evil","x")', 40.0, "aaaa1111"),
               cls(2, "softmax", 39.3, "bbbb2222"), cls(2, "x", 40.0, "eeee5555", model="-1.25"),
               cls(2, "+cmd", 40.0, "cccc3333", model="@SUM(A1)"),
               cls(2, "\tx", 40.0, "dddd4444", model="-2+3")]
    (tmp_path / "results.json").write_text(json.dumps(records))
    text = leaderboard_text([tmp_path], "csv")
    rows = csv_rows(text)
    labels = {r["row"] for r in rows}
    assert "'=HYPERLINK(\"http://evil\",\"x\") [best@test] (stage 2)" in labels
    assert "'+cmd [best@test] (stage 2)" in labels and "'\tx [best@test] (stage 2)" in labels
    assert {r["model"] for r in rows} == {"-1.25", "'@SUM(A1)", "'-2+3", "resnet32"}
    softmax = find(rows, "softmax [best@test] (stage 2)", "cifar100lt", model="resnet32")
    assert softmax["delta"].startswith("-3.1") and float(softmax["delta"]) == pytest.approx(-3.10)
    assert "'-" not in text.replace("'-2+3", "")                              # no number was quoted
    assert not any(v.startswith(("=", "+", "@", "\t", "\r")) for r in rows for v in r.values())
    assert all(float(v) < 0 for r in rows for v in r.values() if v.startswith("-"))    # only numbers start with -


def test_a_single_run_shows_its_number_and_n_without_a_std(tmp_path):
    """One seed has no std: '84.60 (n=1)', not '84.60 ± - (n=1)'; two seeds show it."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps([cls(1, "softmax", 84.6, "aaaa1111")]))
    rows = md_table(leaderboard_text([tmp_path / "a"]), "classification")
    assert rows[2] == ["softmax [last] (stage 1)", "84.60 (n=1)"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "results.json").write_text(json.dumps([cls(1, "softmax", 85.6, "aaaa1111", seed=1)]))
    rows = md_table(leaderboard_text([tmp_path]), "classification")
    assert rows[2] == ["softmax [last] (stage 1)", "85.10 ± 0.71 (n=2)"]
    latex = leaderboard_text([tmp_path / "a"], "latex")
    assert r"softmax [last] (stage 1) & 84.60 (n=1) \\" in latex and r"\pm" not in latex


def test_csv_and_json_round_as_the_text_and_write_integral_imbalances_as_integers(tmp_path):
    """float32 metrics (84.60000157356262) are 84.6 in JSON, "84.60" in CSV, as the Markdown's
    2 decimals; imbalance 100.0 is 100, 12.5 stays."""
    records = [cls(1, "softmax", 84.60000157356262, "aaaa1111", imbalance=100.0),
               cls(1, "softmax", 70.123456, "bbbb2222", imbalance=12.5)]
    (tmp_path / "results.json").write_text(json.dumps(records))
    cells = [c for c in json.loads(leaderboard_text([tmp_path], "json")) if not c["reference"]]
    assert [(c["imbalance"], c["mean"], c["std"], c["n"]) for c in cells if c["mean"] is not None] == \
        [(12.5, 70.12, None, 1), (100, 84.6, None, 1)]
    assert isinstance(find(cells, "softmax [last] (stage 1)", "cifar100lt", imbalance=100)["imbalance"], int)
    text = leaderboard_text([tmp_path], "csv")
    assert "84.60000157356262" not in text and "100.0" not in text
    rows = [r for r in csv_rows(text) if r["reference"] == "False" and r["mean"]]
    assert [(r["imbalance"], r["mean"], r["std"], r["n"]) for r in rows] == [("12.5", "70.12", "", "1"),
                                                                            ("100", "84.60", "", "1")]
    assert md_table(leaderboard_text([tmp_path]), "classification")[0] == \
        ["method", "cifar100lt ib=12.5 resnet32", "cifar100lt ib=100 resnet32"]


def test_markdown_names_each_column_once_over_its_metrics(runs):
    """Markdown has one header row: the column's label heads its first metric, the other
    metrics are named alone (the label is not repeated for every metric)."""
    rows = md_table(leaderboard_text([runs / "c100_gumbel_s0", runs / "c100_ib200"], metrics="top1,many"),
                    "classification")
    assert rows[0] == ["method", "cifar100lt ib=100 resnet32 top1", "many", "cifar100lt ib=200 resnet32 top1", "many"]
    assert rows[1] == ["---", "---:", "---:", "---:", "---:"]
    assert {len(r) for r in rows} == {5}
    assert md_table(leaderboard_text([runs / "c100_gumbel_s0"]), "classification")[0] == \
        ["method", "cifar100lt ib=100 resnet32"]                          # one metric: the label alone


def test_records_without_setup_hash_are_grouped_with_a_warning(tmp_path, caplog):
    """Records written by other tools (no setup_hash, seed or created) are read, not refused:
    grouped by task, imbalance, model, stage and method, with a warning naming the file; beside
    lt_bench's own records of that cell they get a row of their own."""
    foreign = [{"task": "cifar100lt", "imbalance": 100, "model": "resnet32", "stage": 2, "method": "gumbel",
                "top1": top1} for top1 in (44.0, 45.0)]
    foreign.append({"task": "cifar100lt", "imbalance": 100, "model": "resnet32", "stage": 2, "method": "mine",
                    "top1": 40.0})
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(foreign))
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "results.json").write_text(json.dumps([cls(2, "gumbel", 46.0, "aaaa1111")]))
    with caplog.at_level("WARNING", logger="lt_bench.leaderboard_table"):
        cells = json.loads(leaderboard_text([tmp_path], "json", epoch="last"))
    assert "3 classification record(s) without setup_hash" in caplog.text
    assert str(tmp_path / "other" / "results.json") in caplog.text
    theirs = find(cells, "gumbel [last] (stage 2) [no setup_hash]", "cifar100lt", imbalance=100)
    assert (theirs["mean"], theirs["std"], theirs["n"], theirs["setup_hash"]) == (44.5, 0.71, 2, None)
    ours = find(cells, "gumbel [last] (stage 2)", "cifar100lt", imbalance=100)
    assert (ours["mean"], ours["n"], ours["setup_hash"]) == (46.0, 1, "aaaa1111")
    alone = find(cells, "mine [last] (stage 2)", "cifar100lt", imbalance=100)      # only theirs: the plain row
    assert (alone["mean"], alone["n"], alone["setup_hash"]) == (40.0, 1, None)
    (tmp_path / "bad").mkdir()           # still refused: a record that names no task
    (tmp_path / "bad" / "results.json").write_text(json.dumps([{"method": "x", "stage": 1, "top1": 1.0}]))
    with pytest.raises(DataError, match="lacks task, imbalance, model"):
        build_leaderboard([tmp_path / "bad"])


def test_cli_metrics_comma_or_space_separated(runs, capsys):
    expected = leaderboard_text([runs / "inlt"], metrics="top1,many")
    for argv in ([str(runs / "inlt"), "--metrics", "top1,many"], [str(runs / "inlt"), "--metrics", "top1", "many"],
                 ["--metrics", "top1", "many", str(runs / "inlt")]):
        assert main(argv) == 0
        assert capsys.readouterr().out == expected, argv
    assert main([str(runs / "inlt"), "--metrics", "top1", "top3"]) == 2
    assert "'top3'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--metrics", "top1"])


def test_same_setup_merges_the_named_setups_and_says_so(runs, capsys):
    """``--same-setup cccc22=aaaa11``: the later configuration's runs join the first's cells as
    one more sample of the same seed (seed 0 there twice -> averaged, n stays 3), and a note
    under the table names the merge; prefixes that match nothing, or are ambiguous or malformed,
    are refused with the value named."""
    assert main([str(runs), "--same-setup", "cccc22=aaaa11", "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "[cfg cccc22]" not in text and text.count("counted as setup") == 1     # the classification table only
    assert "- setup cccc22 counted as setup aaaa11 (2 record(s); --same-setup cccc22=aaaa11" in text
    cells = json.loads(leaderboard_text([runs], "json", same_setup=["cccc22=aaaa11"]))
    gumbel = find(cells, "gumbel [best@test] (stage 2)", "cifar100lt", imbalance=100)
    per_seed = [(GUMBEL_C100[0] + 44.0) / 2, GUMBEL_C100[1], GUMBEL_C100[2]]
    assert (gumbel["n"], gumbel["mean"]) == (3, round(statistics.mean(per_seed), 2))
    assert not [c for c in cells if "[cfg" in c["row"]]
    (runs / "more").mkdir()
    (runs / "more" / "results.json").write_text(json.dumps([cls(2, "gumbel", 40.0, "aaaa1199")]))
    for pairs, message in ((["cccc22=aaaa11"], "matches 2 setup_hash values"),
                           (["123456=aaaa1111"], "matches no record"),
                           (["cccc=aaaa1111"], "at least 6 hex digits"),
                           (["cccc2222"], "expected OLD=NEW"),
                           (["cccc2222=cccc2222"], "merged into itself")):
        with pytest.raises(ConfigError, match=message):
            leaderboard_text([runs], "md", same_setup=pairs)


def test_a_box_only_detectors_ap_is_named_box_ap_under_the_table(tmp_path):
    records = [det("focal+gumbel", 30.0, "r1", model="retinanet_r50", ap_type="bbox"),
               det("gumbel", 19.5, "m1", ap_type="segm")]
    (tmp_path / "results.json").write_text(json.dumps(records))
    text = leaderboard_text([tmp_path], "md")
    assert "- retinanet_r50: a box-only detector; its AP, APr, APc, APf are box AP" in text
    assert "mask_rcnn_r50:" not in text
    (tmp_path / "results.json").write_text(json.dumps(records[1:]))
    assert "box-only" not in leaderboard_text([tmp_path], "md")
