"""Runtime settings: the persistent compilation cache (thread pinning is tested in test_resumable.py)."""

import subprocess
import sys
import textwrap

import pytest

from solvable_attention.runtime import enable_compilation_cache

# A worker process: pinned and given the cache, it evaluates the softmax pre-training channel (a program
# whose compilation takes well over CACHE_MIN_COMPILE_SECONDS) and prints q̂ to full precision.
_WORKER = textwrap.dedent("""
    import sys
    from solvable_attention.runtime import pin_worker_threads
    pin_worker_threads(1, sys.argv[1])
    from solvable_attention.params import PretrainParams
    from state_evolution.channel_monte_carlo import MonteCarloChannel
    ch = MonteCarloChannel.create(PretrainParams(alpha=0.1, delta=0.5, lam=0.05), n_samples=256, n_test_samples=16)
    print(repr(ch.evaluate(0.6, 0.8, 1.5).conjugates.q_hat))
""")


def _run_worker(folder):
    out = subprocess.run([sys.executable, "-c", _WORKER, str(folder)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_a_second_process_loads_the_compiled_channel_and_gets_the_same_numbers(tmp_path):
    """The first process compiles the channel and writes it to the cache; the second finds it there (it adds
    no entry: JAX writes only what it compiled) and returns the same q̂ to the last bit (the same program)."""
    folder = tmp_path / "cache"
    first = _run_worker(folder)
    entries = set(p.name for p in folder.iterdir())
    assert any("channel_statistics" in name for name in entries), entries
    second = _run_worker(folder)
    assert set(p.name for p in folder.iterdir()) == entries
    assert second == first


def test_a_cache_path_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        enable_compilation_cache(path)


def test_the_command_line_flags_choose_the_cache_folder(tmp_path):
    """``--compilation-cache DIR`` is created and recorded for the workers; ``--no-compilation-cache`` records none."""
    from simulations.cli.arguments import use_compilation_cache
    from simulations.cli.main import build_parser

    parser = build_parser()
    base = ["solve", "--alpha", "0.1", "--delta", "0.5", "--lam", "0.05"]
    args = parser.parse_args(base + ["--compilation-cache", str(tmp_path / "c")])
    use_compilation_cache(args)
    assert args.compilation_cache == str(tmp_path / "c") and (tmp_path / "c").is_dir()
    args = parser.parse_args(base + ["--no-compilation-cache"])
    use_compilation_cache(args)
    assert args.compilation_cache is None


def test_bad_cache_paths_are_refused_with_the_parameter_named(tmp_path, monkeypatch):
    """An empty path or a non-path is refused (not silently the current folder); the Executor checks its folder
    when built (not in each worker) and refuses one it would not use (in-process or Dask). The thread budget is
    stubbed so that two workers are allowed on any machine (it has its own tests in test_resumable.py)."""
    from simulations.campaigns import resumable
    from simulations.campaigns.resumable import Executor

    monkeypatch.setattr(resumable, "threads_per_worker", lambda workers, cores=None: 1)

    for bad in ("", 3):
        with pytest.raises(ValueError, match="compilation_cache must be a non-empty folder path"):
            enable_compilation_cache(bad)
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        Executor(workers=2, compilation_cache=str(path))
    with pytest.raises(ValueError, match="local worker processes"):
        Executor(workers=1, compilation_cache=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="local worker processes"):
        Executor(workers=2, backend="dask", compilation_cache=str(tmp_path / "c"))
    ex = Executor(workers=2, compilation_cache=str(tmp_path / "new"))
    assert (tmp_path / "new").is_dir() and ex.compilation_cache == str(tmp_path / "new")


def test_contradicting_cache_flags_are_refused(tmp_path):
    from simulations.cli.main import main

    argv = ["solve", "--alpha", "0.1", "--delta", "0.5", "--lam", "0.05", "--no-compilation-cache",
            "--compilation-cache", str(tmp_path / "c")]
    assert main(argv) == 2
