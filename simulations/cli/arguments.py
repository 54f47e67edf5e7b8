"""Arguments shared by several commands, and their validation.

The model's parameters (docs/model.md §5) as flags (:func:`add_model_arguments`), seeds
(:func:`add_seed_arguments`, :func:`seed_list`), where the work runs (:func:`add_dask_argument`,
:func:`make_executor`), and the checks every command runs before any work (:func:`validate`,
:func:`check_writable`). A bad value raises :class:`UsageError` (a message naming the flag) or the
package's own ``ValueError`` (naming the keyword, which :func:`simulations.cli.main.main` turns into the
flag); both are reported as ``error: <message>`` with exit status :data:`EXIT_USAGE`.
"""

from __future__ import annotations

import os

from ..campaigns.resumable import Executor

EXIT_USAGE = 2

# The model's keyword arguments (simulations.simulate / state_evolution.solve_state_evolution), in flag order.
MODEL_KEYWORDS = ("alpha", "alpha_prime", "delta", "lam", "lam_prime", "T", "beta", "kappa0", "kappa",
                  "gamma", "activation", "delta_prime", "noise", "reuse", "recalibrate")
REQUIRED = ("alpha", "alpha_prime", "delta", "lam")


class UsageError(Exception):
    """A bad command-line argument; reported as ``error: <message>``, exit status 2."""


def add_model_arguments(p, *, several=(), required=REQUIRED, reuse: bool = True) -> None:
    """Add the model's parameters (docs/model.md §5) to parser ``p``.

    Args:
        p: an ``argparse`` (sub-)parser.
        several: keyword names (e.g. ``("lam", "lam_prime")``) whose flag takes one or more values
            (``nargs="+"``, parsed as a list); the others take exactly one.
        required: keyword names whose flag must be given (the others default to ``None``).
        reuse: add ``--reuse`` (fine-tuning on the pre-training inputs; the simulator only).
    """
    def real(name, flag, help_, default=None):
        many = name in several
        if many and default is not None:
            default = [default]
        p.add_argument(flag, dest=name, type=float, nargs="+" if many else None, default=default,
                       required=name in required, metavar=name.upper() if many else None,
                       help=help_ + (" (one or more values: a grid)" if many else ""))

    real("alpha", "--alpha", "pre-training samples / D^2")
    real("alpha_prime", "--alpha-prime", "fine-tuning samples / D")
    real("delta", "--delta", "pre-training label-noise variance")
    real("lam", "--lam", "pre-training nuclear-norm strength")
    real("lam_prime", "--lam-prime", "LoRA ridge strength ('inf': no adaptation; default 1)", default=1.0)
    p.add_argument("--T", type=int, default=3, help="tokens (default 3)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature (default 1)")
    p.add_argument("--kappa0", type=float, default=1.0, help="teacher width ratio (default 1)")
    p.add_argument("--kappa", type=float, default=1.0, help="student width ratio (default 1)")
    p.add_argument("--gamma", type=float, default=1.0, help="fine-tuning direction strength")
    p.add_argument("--activation", choices=("softmax", "identity"), default="softmax")
    p.add_argument("--delta-prime", type=float, default=None,
                   help="fine-tuning label noise (default: --delta)")
    p.add_argument("--noise", choices=("logits", "output"), default="logits",
                   help="where the label noise enters (default: logits)")
    if reuse:
        p.add_argument("--reuse", action="store_true", help="fine-tune on pre-training inputs")
    p.add_argument("--recalibrate", action="store_true", help="also train c in c*S + u u^T/sqrt(D)")


def model_kwargs(args) -> dict:
    """Keyword arguments of :func:`simulations.simulate` from parsed arguments (except D, seed).

    Args:
        args: the parsed ``argparse.Namespace``; the model keywords of :data:`MODEL_KEYWORDS`, ``method``,
            ``n_test`` and ``pretrain_tol`` are taken when the command defines them.

    Returns:
        ``{keyword: value}``, with ``x64`` set to ``not args.float32`` (``True`` when there is no
        ``--float32`` flag).
    """
    kw = {name: getattr(args, name) for name in MODEL_KEYWORDS if hasattr(args, name)}
    for name in ("method", "n_test", "pretrain_tol", "rank", "shift_rank", "finetune"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    kw["x64"] = not getattr(args, "float32", False)
    return kw


def add_seed_arguments(p) -> None:
    """Add ``--seeds N`` (seeds ``0..N-1``, default 4) or ``--seed-list SEED ...`` (mutually exclusive).

    Args:
        p: an ``argparse`` (sub-)parser.
    """
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=4, metavar="N", help="seeds 0..N-1 (default 4)")
    group.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="explicit seeds")


def seed_list(args) -> list[int]:
    """The seeds asked for.

    Args:
        args: the parsed arguments, with ``seeds`` and ``seed_list`` (:func:`add_seed_arguments`).

    Returns:
        ``args.seed_list`` when given, else ``[0, ..., args.seeds - 1]``.

    Raises:
        UsageError: no seeds (``--seeds`` < 1), a negative seed, or repeated seeds.
    """
    seeds = list(args.seed_list) if args.seed_list is not None else list(range(args.seeds))
    if not seeds:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
    if min(seeds) < 0:
        raise UsageError(f"--seed-list seeds must be non-negative integers, got {min(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed-list has repeated seeds: {seeds}")
    return seeds


def validate(D, kw) -> None:
    """Run the package's parameter checks before any work.

    Args:
        D: the embedding dimension (checked by :func:`solvable_attention.params.check_dimension`).
        kw: the model keyword arguments (:func:`model_kwargs`); all but ``method``, ``n_test``,
            ``pretrain_tol`` and ``x64`` go to :func:`solvable_attention.params.make_params`.

    Raises:
        ValueError: a bad dimension ``D`` or model parameter (message names the keyword), ``n_test < 1``
            or ``pretrain_tol <= 0``.
    """
    from solvable_attention.params import check_dimension, make_params

    check_dimension(D)
    update = ("rank", "shift_rank", "finetune")
    make_params(**{k: v for k, v in kw.items() if k not in ("method", "n_test", "pretrain_tol", "x64") + update})
    if "rank" in kw:
        from ..simulator.two_stage import check_update

        check_update(kw["rank"], kw.get("finetune", "lora"), kw.get("recalibrate", False), kw.get("lam_prime", 1.0))
        if not kw.get("shift_rank", 1) >= 1:
            raise ValueError(f"shift_rank must be an integer >= 1, got {kw['shift_rank']}")
    if kw.get("n_test", 1) < 1:
        raise ValueError(f"n_test must be a positive integer, got {kw['n_test']}")
    if not kw.get("pretrain_tol", 1.0) > 0:
        raise ValueError(f"pretrain_tol must be > 0, got {kw['pretrain_tol']}")


def check_writable(path, flag: str = "--json") -> None:
    """Fail early (before hours of work) when ``path``'s directory cannot be written.

    Creates the directory of ``path`` when missing.

    Args:
        path: the output file the command will write.
        flag: the flag that gave ``path``, named in the error message.

    Raises:
        UsageError: ``path`` is a directory, or its folder cannot be created or written.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create directory for {flag} {path!r}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write to directory {directory!r} ({flag})")


def add_dask_argument(p) -> None:
    """Add ``--dask [SCHEDULER]``: run the command's points on Dask (see :func:`make_executor`).

    Args:
        p: an ``argparse`` (sub-)parser.
    """
    p.add_argument("--dask", nargs="?", const="local", default=None, metavar="SCHEDULER",
                   help="run the sweeps on Dask: a local cluster of --workers processes, or the scheduler "
                        "address given (tcp://host:8786); needs the [distributed] extra")


def add_compilation_cache_arguments(p) -> None:
    """Add ``--compilation-cache DIR`` and ``--no-compilation-cache`` (see :func:`use_compilation_cache`).

    Args:
        p: an ``argparse`` (sub-)parser.
    """
    p.add_argument("--compilation-cache", default=None, metavar="DIR",
                   help="folder of the persistent XLA compilation cache (default ~/.cache/solvable-attention/xla): "
                        "a later run loads the compiled channels and simulator instead of compiling them again")
    p.add_argument("--no-compilation-cache", action="store_true", help="compile everything afresh (no disk cache)")


def use_compilation_cache(args) -> None:
    """Turn the persistent compilation cache on for this process (unless ``--no-compilation-cache``) and record
    its folder in ``args.compilation_cache`` for the worker processes (``None`` when off).

    Args:
        args: the parsed arguments (:func:`add_compilation_cache_arguments`).

    Raises:
        UsageError: the folder is empty, cannot be created or written, or both flags are given.
    """
    from solvable_attention.runtime import enable_compilation_cache

    if getattr(args, "no_compilation_cache", False):
        if getattr(args, "compilation_cache", None) is not None:
            raise UsageError("--no-compilation-cache and --compilation-cache contradict each other: give one")
        args.compilation_cache = None
        return
    try:
        args.compilation_cache = str(enable_compilation_cache(getattr(args, "compilation_cache", None)))
    except ValueError as exc:
        raise UsageError(f"--compilation-cache: {exc}") from None


def make_executor(args) -> Executor:
    """``--workers N [--dask [ADDRESS]]``: where the command's points run (:class:`Executor`).

    Args:
        args: the parsed arguments, with ``workers`` and ``dask`` (:func:`add_dask_argument`).

    Returns:
        An :class:`Executor` of ``args.workers`` processes; with ``--dask``, on the Dask backend (a local
        cluster for ``--dask`` alone, else the scheduler address given).

    Raises:
        UsageError: ``--workers < 1``, or ``--dask`` without the optional dependency.
    """
    if args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    if args.dask is None:
        cache = getattr(args, "compilation_cache", None) if args.workers > 1 else None  # workers = 1: this process
        return Executor(workers=args.workers, compilation_cache=cache)
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise UsageError("--dask needs the optional extra: pip install -e '.[distributed]'") from None
    return Executor(workers=args.workers, backend="dask", address=None if args.dask == "local" else args.dask)
