"""``solvable-attention solve``: the state evolution at one point and on a grid, from the command line.

Cheap settings throughout: the identity activation (closed-form pre-training channel) and 2048 Monte Carlo
samples of the LoRA channel, a few seconds per point.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import sys

import pytest

import state_evolution
from simulations.campaigns.records import restore_inf
from solvable_attention.status import Status
from simulations.cli import main
from state_evolution import solve_state_evolution

SETTING = dict(alpha=0.5, alpha_prime=3.0, delta=0.5, lam=0.01, activation="identity")
N_SAMPLES = 2048
BASE = ["solve", "--alpha", "0.5", "--alpha-prime", "3", "--delta", "0.5", "--activation", "identity",
        "--n-samples", str(N_SAMPLES), "--no-progress"]
ONE = BASE + ["--lam", "0.01"]
SOLVERS = ("solve_state_evolution", "sweep_state_evolution", "solve_pretraining", "sweep_pretraining")


def _data_lines(out: str) -> list[str]:
    """The table's rows: the lines after the column header, before the summary line."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.rstrip().endswith("status")) + 1
    return [line for line in lines[start:] if "points converged" not in line and not line.startswith("wrote")]


@pytest.fixture(scope="module")
def one_point(tmp_path_factory):
    folder = tmp_path_factory.mktemp("solve") / "new"  # does not exist yet
    capture = pytest.MonkeyPatch()
    import io

    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        code = main(ONE + ["--json", str(folder / "one.json"), "--csv", str(folder / "one.csv")])
    finally:
        capture.undo()
    return code, out.getvalue(), folder


def test_one_point_prints_a_table_and_exits_0(one_point):
    code, out, _ = one_point
    assert code == 0
    header = next(line for line in out.splitlines() if line.rstrip().endswith("status")).split()
    assert header == ["mse_S", "E", "E'", "E'_0", "alignment", "replicon", "residual", "status"]
    rows = _data_lines(out)
    assert len(rows) == 1 and rows[0].endswith("converged") and "not" not in rows[0]
    assert "alpha=0.5" in out and "activation=identity" in out and "n_samples=2048" in out
    assert "1 of 1 points converged" in out


def test_one_point_json_equals_a_direct_solve(one_point):
    _, out, folder = one_point
    data = json.loads((folder / "one.json").read_text())
    direct = solve_state_evolution(**SETTING, n_samples=N_SAMPLES, seed=0, warn=False).to_dict()
    (point,) = data["points"]
    for stage in ("pretrain", "finetune"):
        expected = {k: v for k, v in direct[stage].items() if k not in ("params", "seconds")}
        stored = {k: v for k, v in restore_inf(point[stage]).items() if k != "seconds"}
        assert stored == expected, stage  # bit for bit (JSON keeps every float exactly)
    assert point["converged"] is True and point["solver"] == "solve_state_evolution"
    assert point["parameters"] == dict(alpha=0.5, alpha_prime=3.0, delta=0.5, lam=0.01, lam_prime=1.0, T=3,
                                       beta=1.0, kappa0=1.0, kappa=1.0, gamma=1.0, activation="identity",
                                       noise="logits", delta_prime=0.5, recalibrate=False, n_samples=N_SAMPLES,
                                       seed=0)
    for key in ("versions", "machine", "threads", "timestamp"):
        assert data[key], key
    assert data["command"] == "solve" and data["converged"] is True and data["n_points"] == 1
    # the printed row shows the same numbers
    row = _data_lines(out)[0].split()
    assert float(row[2]) == pytest.approx(direct["finetune"]["test_error"], rel=1e-5)
    assert float(row[3]) == pytest.approx(direct["finetune"]["test_error_baseline"], rel=1e-5)


def test_one_point_csv_columns(one_point):
    _, _, folder = one_point
    with open(folder / "one.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    columns = set(rows[0])
    for name in ("alpha", "alpha_prime", "delta", "lam", "lam_prime", "T", "activation", "delta_prime",
                 "n_samples", "seed", "solver", "converged", "pretrain.mse_S", "pretrain.test_error",
                 "pretrain.converged", "pretrain.iterations", "pretrain.residual", "pretrain.method",
                 "finetune.test_error", "finetune.test_error_baseline", "finetune.alignment", "finetune.replicon",
                 "finetune.converged", "finetune.iterations", "finetune.residual", "meta.versions.jax",
                 "meta.machine.jax_backend", "meta.timestamp"):
        assert name in columns, name
    data = json.loads((folder / "one.json").read_text())["points"][0]
    assert float(rows[0]["finetune.test_error"]) == data["finetune"]["test_error"]
    assert sorted(p.name for p in folder.iterdir()) == ["one.csv", "one.json"]  # no temporary file left


def test_grid_of_lam_and_lam_prime(tmp_path, capsys):
    """2 × 2 grid (λ ∈ {0.01, 0.05}, λ' ∈ {1, inf}): one warm-started sweep, four rows, λ' varying
    fastest; ``λ' = inf`` is the unadapted model (E' = E'_0)."""
    path = tmp_path / "grid.csv"
    assert main(BASE + ["--lam", "0.01", "0.05", "--lam-prime", "1", "inf", "--csv", str(path),
                        "--json", str(tmp_path / "grid.json")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.rstrip().endswith("status")).split()
    assert header[:3] == ["lam", "lam'", "mse_S"]
    rows = [line.split() for line in _data_lines(out)]
    assert [(r[0], r[1]) for r in rows] == [("0.01", "1"), ("0.01", "inf"), ("0.05", "1"), ("0.05", "inf")]
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [(float(r["lam"]), float(r["lam_prime"])) for r in table] == [(0.01, 1.0), (0.01, math.inf),
                                                                        (0.05, 1.0), (0.05, math.inf)]
    assert {r["solver"] for r in table} == {"sweep_state_evolution"}
    for r in table:
        if r["lam_prime"] == "inf":
            assert r["finetune.test_error"] == r["finetune.test_error_baseline"]
    data = restore_inf(json.loads((tmp_path / "grid.json").read_text()))
    assert data["grid"] == dict(alpha=[0.5], alpha_prime=[3.0], delta=[0.5], lam=[0.01, 0.05],
                                lam_prime=[1.0, math.inf])
    assert [p["pretrain"]["mse_S"] for p in data["points"]][::2] == [p["pretrain"]["mse_S"]
                                                                     for p in data["points"]][1::2]


def test_pretrain_only_needs_no_fine_tuning_flags(capsys, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("the LoRA stage ran with --pretrain-only")

    monkeypatch.setattr(state_evolution, "solve_state_evolution", must_not_run)
    monkeypatch.setattr(state_evolution, "sweep_state_evolution", must_not_run)
    argv = ["solve", "--alpha", "0.5", "--delta", "0.5", "--lam", "0.01", "0.05", "--activation", "identity",
            "--pretrain-only", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.rstrip().endswith("status")).split()
    assert header == ["lam", "mse_S", "E", "residual", "status"]
    assert len(_data_lines(out)) == 2


def test_not_converged_exits_1_and_says_which_stage(capsys, monkeypatch):
    real = state_evolution.solve_state_evolution

    def unconverged(*args, **kwargs):
        s = real(*args, **kwargs)
        return dataclasses.replace(s, finetune=dataclasses.replace(s.finetune, converged=False, residual=1e-3,
                                                                   status=Status.MAX_ITERATIONS))

    monkeypatch.setattr(state_evolution, "solve_state_evolution", unconverged)
    assert main(ONE) == 1
    out = capsys.readouterr().out
    assert _data_lines(out)[0].endswith("not converged (finetune max_iterations, residual 1.0e-03)")
    assert "0 of 1 points converged" in out


@pytest.mark.parametrize("extra, message", [
    (["--lam", "0.01", "--alpha-prime", "-1"], "error: --alpha-prime must be in (0, inf)"),
    (["--lam", "0.01", "-0.1"], "error: --lam must be in [0, inf)"),
    (["--lam", "0.01", "--lam-prime", "1", "nan"], "error: --lam-prime must be a number"),
    (["--lam", "0.01", "--delta-prime", "-1"], "error: --delta-prime must be in [0, inf)"),
    (["--lam", "0.01", "--alpha", "0.5", "0"], "error: --alpha must be in (0, inf)"),
    (["--lam", "0.01", "--kappa0", "0"], "error: --kappa0 must be in (0, inf)"),
    (["--lam", "0.01", "--activation", "softmax", "--T", "1"], "error: --T must be >= 2"),
    (["--lam", "0.01", "0.01"], "error: --lam has repeated values"),
    (["--lam", "0.01", "--n-samples", "1"], "error: --n-samples must be an integer >= 2"),
    (["--lam", "0.01", "--seed", "-1"], "error: --seed must be a non-negative integer"),
    (["--lam", "abc"], "error: argument --lam"),
])
def test_bad_values_exit_2_naming_the_flag_before_any_solve(extra, message, capsys, monkeypatch, tmp_path):
    def must_not_run(*args, **kwargs):
        raise AssertionError("solved despite a bad argument")

    for name in SOLVERS:
        monkeypatch.setattr(state_evolution, name, must_not_run)
    assert main(BASE + extra + ["--json", str(tmp_path / "r.json")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), captured.err
    assert captured.out == "" and not (tmp_path / "r.json").exists()


def test_alpha_prime_required_without_pretrain_only(capsys):
    assert main(["solve", "--alpha", "0.5", "--delta", "0.5", "--lam", "0.01"]) == 2
    assert capsys.readouterr().err.startswith("error: --alpha-prime is required")


def test_help_states_exit_status_and_default_samples(capsys):
    from simulations.cli import solve

    assert solve.N_SAMPLES == inspect.signature(solve_state_evolution).parameters["n_samples"].default
    assert main(["solve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "exit status" in out and "some point did not converge" in out and str(solve.N_SAMPLES) in out
    for flag in ("--alpha-prime", "--lam-prime", "--kappa0", "--delta-prime", "--recalibrate", "--pretrain-only",
                 "--n-samples", "--seed", "--json", "--csv", "--no-progress"):
        assert flag in out, flag


def test_status_column_says_when_the_branch_selection_is_not_resolved():
    """The table's status column carries the solver's ``selection_resolved`` finding (records built by hand: the
    outcome follows from the fields)."""
    from simulations.cli.solve import status

    stage = {"converged": True, "residual": 1e-6}
    resolved = {"pretrain": stage, "finetune": dict(stage, selection_resolved=True)}
    unresolved = {"pretrain": stage, "finetune": dict(stage, selection_resolved=False)}
    assert status(resolved) == "converged"
    assert status(unresolved) == "converged; branch selection not resolved"
    assert status({"pretrain": stage, "finetune": None}) == "converged"


def test_footer_counts_unresolved_selections_among_the_converged_points():
    """Three hand-made records: two converged (one with an unresolved selection), one not converged and unresolved
    (not counted: only converged points are reported as such)."""
    from simulations.cli.solve import footer

    ok = {"converged": True, "residual": 1e-6}
    records = [{"converged": True, "pretrain": ok, "finetune": dict(ok, selection_resolved=True)},
               {"converged": True, "pretrain": ok, "finetune": dict(ok, selection_resolved=False)},
               {"converged": False, "pretrain": ok, "finetune": dict(ok, converged=False, selection_resolved=False)}]
    assert footer(records) == "2 of 3 points converged; 1 of them with the branch selection not resolved"
    assert footer(records[:1]) == "1 of 1 points converged"
    assert footer([{"converged": True, "pretrain": ok, "finetune": None}]) == "1 of 1 points converged"
