"""The ``solvable-attention`` command line (simulations/cli/, ``simulate``) and the seed summary
(simulations/simulator/summary.py)."""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest

from simulations import simulate
from simulations.cli import build_parser, main, write_json_atomic
from simulations.simulator.summary import format_mean_se, summarize
from solvable_attention.averages import mean_se

# Tiny, convex (identity) setting: n = 0.5·20² = 200, n' = 60; one compilation shared by all runs.
SETTING = dict(alpha=0.5, alpha_prime=3.0, delta=0.5, lam=0.01, T=3, activation="identity")
D, N_TEST = 20, 1000
ARGV = ["simulate", "--D", str(D), "--alpha", "0.5", "--alpha-prime", "3", "--delta", "0.5",
        "--lam", "0.01", "--T", "3", "--activation", "identity", "--n-test", str(N_TEST)]
STAGES = ("pretrain", "finetune", "pretrain_params", "finetune_params")


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "out" / "run.json"  # parent folder does not exist yet
    code = main(ARGV + ["--seeds", "2", "--json", str(path)])
    return code, path


def test_simulate_writes_complete_json(cli_run):
    code, path = cli_run
    assert code == 0
    data = json.loads(path.read_text())
    for key in ("parameters", "D", "seeds", "results", "summary", "versions", "machine", "timings",
                "timestamp"):
        assert key in data, key
    assert data["D"] == D and data["seeds"] == [0, 1] and len(data["results"]) == 2
    assert data["parameters"]["activation"] == "identity" and data["parameters"]["delta_prime"] == 0.5
    for dist in ("python", "jax", "jaxlib", "optax", "numpy", "scipy", "solvable-attention"):
        assert data["versions"][dist], dist
    assert data["machine"]["jax_backend"] == "cpu"
    assert data["timestamp"].endswith("+00:00")
    assert [f for f in os.listdir(path.parent) if f != path.name] == []  # no temp file left


def test_json_results_equal_direct_simulate(cli_run):
    _, path = cli_run
    data = json.loads(path.read_text())
    for seed, stored in zip((0, 1), data["results"]):
        direct = simulate(D, seed=seed, n_test=N_TEST, **SETTING).to_dict()
        assert stored["seed"] == seed
        for stage in STAGES:
            assert stored[stage] == direct[stage], (seed, stage)


def test_json_summary_is_mean_and_se_of_seeds(cli_run):
    _, path = cli_run
    data = json.loads(path.read_text())
    alignment = [r["finetune"]["alignment"] for r in data["results"]]
    stats = data["summary"]["finetune.alignment"]
    assert stats["mean"] == pytest.approx(np.mean(alignment), rel=1e-12)
    assert stats["se"] == pytest.approx(abs(alignment[0] - alignment[1]) / 2, rel=1e-12)
    assert data["summary"] == json.loads(json.dumps(summarize(data["results"])))


def test_simulate_prints_table(cli_run, capsys):
    assert main(ARGV + ["--seed-list", "1"]) == 0  # compiled already: fast
    out = capsys.readouterr().out
    for name in ("pretrain.mse_S", "pretrain.rank_fraction", "finetune.alignment",
                 "finetune.test_error_baseline", "converged:", "mean timings"):
        assert name in out, name
    row = next(line for line in out.splitlines() if line.startswith("finetune.alignment"))
    assert "±" not in row  # a single seed: the value alone


@pytest.mark.parametrize("extra, name", [
    (["--D", "-5"], "--D"),
    (["--alpha", "0"], "--alpha"),
    (["--alpha", "-1"], "--alpha"),
    (["--lam", "-0.1"], "--lam"),
    (["--lam-prime", "nan"], "--lam-prime"),
    (["--kappa0", "0"], "--kappa0"),
    (["--activation", "relu"], "--activation"),
    (["--activation", "softmax", "--T", "1"], "--T"),
    (["--noise", "input"], "--noise"),
    (["--n-test", "0"], "--n-test"),
    (["--seeds", "0"], "--seeds"),
    (["--D", "1.5"], "--D"),
])
def test_bad_arguments_exit_2_naming_the_parameter(extra, name, capsys, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("simulate ran despite a bad argument")

    monkeypatch.setattr(sys.modules["simulations.simulator.two_stage"], "simulate", must_not_run)
    assert main(ARGV + extra) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert name in lines[0]
    assert captured.out == ""


def test_missing_command_and_help_exit_codes(capsys):
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert main(["simulate", "--help"]) == 0
    assert "--alpha-prime" in capsys.readouterr().out


def test_lam_prime_accepts_inf_and_seed_options():
    args = build_parser().parse_args(ARGV + ["--lam-prime", "inf", "--seed-list", "3", "7"])
    assert math.isinf(args.lam_prime) and args.seed_list == [3, 7]
    assert build_parser().parse_args(ARGV).seeds == 4


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_summarize_exact_mean_and_se():
    results = [{"pretrain": {"m": 1.0, "converged": True}, "finetune": {"q": 2.0}, "timings": {"t": 1.0}},
               {"pretrain": {"m": 2.0, "converged": False}, "finetune": {"q": 2.0}, "timings": {"t": 3.0}},
               {"pretrain": {"m": 6.0, "converged": True}, "finetune": {"q": 2.0}, "timings": {"t": 5.0}},
               {"pretrain": {"m": 7.0, "converged": True}, "finetune": {"q": 2.0}, "timings": {"t": 7.0}}]
    s = summarize(results)
    assert set(s) == {"pretrain.m", "finetune.q", "timings.t"}  # booleans are not metrics
    # m = 1, 2, 6, 7: mean 4, sample variance (9+4+4+9)/3 = 26/3, s.e. = sqrt(26/3)/2
    assert s["pretrain.m"]["mean"] == pytest.approx(4.0, rel=1e-15)
    assert s["pretrain.m"]["se"] == pytest.approx(math.sqrt(26 / 3) / 2, rel=1e-15)
    assert s["pretrain.m"]["n"] == 4
    assert s["finetune.q"] == {"mean": 2.0, "se": 0.0, "n": 4}
    assert s["timings.t"]["se"] == pytest.approx(math.sqrt(20 / 3) / 2, rel=1e-15)


def test_mean_se_single_value_and_formatting():
    one = mean_se([0.25])
    assert one.mean == 0.25 and math.isnan(one.se) and one.n == 1
    assert format_mean_se(one._asdict()) == "0.25" == one.format()
    assert format_mean_se(mean_se([1.0, 3.0])._asdict()) == "2 ± 1"


def test_version_prints_the_distribution_version(capsys):
    from importlib import metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"solvable-attention {metadata.version('solvable-attention')}\n"


def test_python_dash_m_runs_the_command_line():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "simulations.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("solvable-attention ")


@pytest.mark.parametrize("argv, flag", [
    (ARGV + ["--alpha-prime", "-1"], "--alpha-prime"),  # the last value given wins
    (ARGV + ["--delta-prime", "-0.5"], "--delta-prime"),
    (["solve", "--alpha", "0.5", "--alpha-prime", "-1", "--delta", "0.5", "--lam", "0.01"], "--alpha-prime"),
    (["solve", "--alpha", "0.5", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.01", "--lam-prime", "-2"],
     "--lam-prime"),
    (["convergence", "--alpha", "0.5", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.01", "--kappa", "0",
      "--D", "10", "20"], "--kappa"),
])
def test_errors_name_the_flag_not_the_keyword(argv, flag, capsys):
    """The package says ``alpha_prime must be ...``; the command line says ``--alpha-prime must be ...``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} must be "), err


def test_flag_message_rewrites_only_a_leading_keyword():
    from simulations.cli import flag_message

    flags = {"alpha_prime": "--alpha-prime", "lam_prime": "--lam-prime", "T": "--T"}
    message = "alpha_prime must be in (0, inf), got -1.0"
    assert flag_message(message, flags) == "--alpha-prime must be in (0, inf), got -1.0"
    assert flag_message("T must be >= 2 with the softmax activation, got 1", flags).startswith("--T must")
    assert flag_message("lam_primes are unknown", flags) == "lam_primes are unknown"
    assert flag_message("unknown figure 'x'", flags) == "unknown figure 'x'"


def test_reproduce_lists_every_figure_in_help_and_error(capsys):
    from simulations.figures import FIGURES

    assert {"fig3", "fig4"} <= set(FIGURES)
    assert main(["reproduce", "--help"]) == 0
    out = capsys.readouterr().out
    assert f"one of {', '.join(FIGURES)}" in " ".join(out.split()) and "all" not in out.split()
    assert main(["reproduce", "nofig"]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in FIGURES) and "'all'" not in err
