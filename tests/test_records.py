"""Result files and figures (simulations/campaigns/records.py): atomic writes, no global matplotlib state."""

import json
import subprocess
import sys

import pytest

from simulations.campaigns.records import jsonable, restore_inf, write_file_atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"previous")

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_file_atomic(path, broken)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    write_file_atomic(path, lambda tmp: open(tmp, "wb").write(b"new"))
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_infinities_and_statuses_round_trip_through_json():
    from solvable_attention.status import Status

    data = json.loads(json.dumps(jsonable({"lam_prime": float("inf"), "s": Status.NOT_GLOBAL, "x": [float("-inf")]})))
    assert restore_inf(data) == {"lam_prime": float("inf"), "s": "not_global", "x": [float("-inf")]}


def test_plots_leave_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    """In a fresh process with the 'svg' backend selected, drawing and saving a comparison plot neither switches
    the backend nor imports pyplot (so inline plots in a notebook keep working)."""
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
from simulations.campaigns.statistics import comparison_table
from simulations.campaigns.comparison_plots import plot_comparison
values = {{"x": {{20: [1.1, 1.2, 1.0], 40: [1.05, 1.0, 1.1], 80: [1.0, 1.02, 1.01]}}}}
plot_comparison(comparison_table({{"x": 1.0}}, values), {str(tmp_path / 'c.png')!r})
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["svg", "False"]
    assert (tmp_path / "c.png").stat().st_size > 1000
