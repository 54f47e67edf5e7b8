"""Active fine-tuning: which candidate samples to label (docs/model.md §3, docs/theory.md §5.3).

A *strategy* scores each candidate by a function of its low-dimensional fields only,

    score = s(Ĥ, Y)      Ĥ = H(Ŝ; X) the frozen pre-trained logits (T×T, known to the learner),
                         Y the candidate's pre-training label (reuse variant only, else ``None``),

and :func:`select` keeps the ``k`` candidates of highest score. Because the score depends on ``X``
only through ``Ĥ`` (and the pre-training quantities), the *same* function ``s`` evaluated on the
fields of the state evolution gives the theory's selection rule: as ``D → ∞`` keeping the top
fraction ``φ = k/n_pool`` becomes the indicator ``1{s > t_φ}`` with ``t_φ`` the ``1 − φ`` quantile
of ``s`` under the candidate law (docs/theory.md §5, :mod:`state_evolution.selection`).

Built-in strategies (registered by name in :data:`STRATEGIES`):

* ``random``: uniform scores from a key (selection independent of the data: the law of the
  selected samples is the candidate law).
* ``entropy``: ``Σ_a H(softmax(β Ĥ_a))``, the Shannon entropy of the rows of the pre-trained
  attention (uncertainty sampling). Rationale: a LoRA logit change ``δH`` moves a softmax row by
  ``J_a δH_a`` with ``J_a = diag(p_a) − p_a p_aᵀ``; flat (high-entropy) rows have the largest
  Jacobian, saturated rows transmit almost nothing to the label.
* ``logit_norm``: ``‖Ĥ‖_F`` (the most extreme pre-trained logits).
* ``low_logit_norm``: ``−‖Ĥ‖_F``. For the identity activation the pre-training error acts on
  LoRA through ``H0 − Ĥ = (m/q − 1) Ĥ + N`` (docs/theory.md §4.4): small ``‖Ĥ‖`` means a smaller
  effective noise whenever ``m ≠ q``.
* ``residual``: the pre-training residual ``‖Y − σ(Ĥ)‖²_F`` (needs pre-training labels: the
  reuse variant); ``low_residual`` its negative.

Users add a strategy by subclassing :class:`Strategy` (a frozen dataclass with one
:meth:`Strategy.score`) and, optionally, :func:`register` -ing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .activations import apply_activation
from .attention import attention_logits
from .params import ACTIVATIONS


@dataclass(frozen=True)
class Strategy:
    """A selection rule: :meth:`score` maps fields ``(Ĥ (n, T, T), Y (n, T, T) or None, key)`` to
    ``(n,)`` scores; higher is selected first (docs/theory.md §5.3).

    Attributes:
        needs_labels: (class attribute) the score uses the pre-training labels ``Y``.
        needs_key: (class attribute) the score is random and needs a ``jax.random`` key.
        field_independent: (class attribute) the score does not depend on the fields at all (the
            selected samples then follow the candidate law exactly; the theory skips the conditioning).
    """

    needs_labels: ClassVar[bool] = False
    needs_key: ClassVar[bool] = False
    field_independent: ClassVar[bool] = False

    def score(self, H_hat, Y=None, key=None):
        """The scores ``s(Ĥ, Y)`` of ``n`` candidates (to be defined by a subclass).

        Args:
            H_hat: ``(n, T, T)`` pre-trained logits ``Ĥ = H(Ŝ; X)`` of the candidates.
            Y: ``(n, T, T)`` pre-training labels (reuse variant) or ``None``.
            key: a ``jax.random`` key (random strategies) or ``None``.

        Returns:
            ``(n,)`` scores, higher selected first.

        Raises:
            NotImplementedError: always, on the base class.
        """
        raise NotImplementedError


@dataclass(frozen=True)
class Random(Strategy):
    """Uniform scores from ``key``: a uniformly random subset."""

    needs_key: ClassVar[bool] = True
    field_independent: ClassVar[bool] = True

    def score(self, H_hat, Y=None, key=None):
        """Uniform scores on ``[0, 1)``.

        Args:
            H_hat: ``(n, T, T)`` logits; only ``n`` is used.
            Y: unused.
            key: the ``jax.random`` key (required).

        Returns:
            ``(n,)`` uniform scores.
        """
        return jax.random.uniform(key, (H_hat.shape[0],))


@dataclass(frozen=True)
class Entropy(Strategy):
    """``Σ_a −Σ_b p_ab log p_ab`` with ``p_a = softmax(β Ĥ_a)``: uncertainty of the pre-trained attention.

    Attributes:
        beta: ``β > 0``, the inverse temperature of the softmax rows.
    """

    beta: float = 1.0

    def score(self, H_hat, Y=None, key=None):
        """The summed row entropies ``Σ_a −Σ_b p_ab log p_ab``, ``p_a = softmax(β Ĥ_a)`` (in nats).

        Args:
            H_hat: ``(n, T, T)`` pre-trained logits ``Ĥ = H(Ŝ; X)`` of the candidates.
            Y: ``(n, T, T)`` pre-training labels (reuse variant) or ``None``; unused here.
            key: a ``jax.random`` key or ``None``; unused here.

        Returns:
            ``(n,)`` scores, higher selected first.
        """
        logp = jax.nn.log_softmax(self.beta * jnp.asarray(H_hat), axis=-1)
        return -jnp.sum(jnp.exp(logp) * logp, axis=(-1, -2))


@dataclass(frozen=True)
class LogitNorm(Strategy):
    """``‖Ĥ‖_F`` (``= √2 ‖ĥ‖`` in whitened coordinates)."""

    def score(self, H_hat, Y=None, key=None):
        """The Frobenius norms ``‖Ĥ‖_F``.

        Args:
            H_hat: ``(n, T, T)`` pre-trained logits ``Ĥ = H(Ŝ; X)`` of the candidates.
            Y: ``(n, T, T)`` pre-training labels (reuse variant) or ``None``; unused here.
            key: a ``jax.random`` key or ``None``; unused here.

        Returns:
            ``(n,)`` scores, higher selected first.
        """
        return jnp.sqrt(jnp.sum(jnp.asarray(H_hat) ** 2, axis=(-1, -2)))


@dataclass(frozen=True)
class Residual(Strategy):
    """The pre-training residual ``‖Y − σ(Ĥ)‖²_F`` (reuse variant: ``Y`` are the pre-training labels).

    Attributes:
        activation: ``"softmax"`` or ``"identity"``, the model's ``σ``.
        beta: ``β > 0``, its inverse temperature.

    Raises:
        ValueError: ``activation`` not one of the choices (at construction).
    """

    activation: str = "softmax"
    beta: float = 1.0
    needs_labels: ClassVar[bool] = True

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")

    def score(self, H_hat, Y=None, key=None):
        """The residuals ``‖Y − σ(Ĥ)‖²_F``.

        Args:
            H_hat: ``(n, T, T)`` pre-trained logits.
            Y: ``(n, T, T)`` pre-training labels (required).
            key: unused.

        Returns:
            ``(n,)`` squared residuals.
        """
        r = jnp.asarray(Y) - apply_activation(jnp.asarray(H_hat), self.activation, self.beta)
        return jnp.sum(r * r, axis=(-1, -2))


@dataclass(frozen=True)
class Lowest(Strategy):
    """The opposite preference of ``base``: score ``−base.score``.

    Attributes:
        base: the strategy whose order is reversed (its ``needs_labels``, ``needs_key``,
            ``field_independent`` carry over).
    """

    base: Strategy

    @property
    def needs_labels(self):  # type: ignore[override]
        return self.base.needs_labels

    @property
    def needs_key(self):  # type: ignore[override]
        return self.base.needs_key

    @property
    def field_independent(self):  # type: ignore[override]
        return self.base.field_independent

    def score(self, H_hat, Y=None, key=None):
        """``−base.score(H_hat, Y, key)``.

        Args:
            H_hat: ``(n, T, T)`` pre-trained logits.
            Y: ``(n, T, T)`` pre-training labels or ``None`` (as ``base`` needs).
            key: a ``jax.random`` key or ``None`` (as ``base`` needs).

        Returns:
            ``(n,)`` negated scores.
        """
        return -self.base.score(H_hat, Y, key)


STRATEGIES: dict = {}
"""Registered strategies: name → ``factory(activation=..., beta=...) -> Strategy``."""


def register(name: str, factory) -> None:
    """Register ``factory(activation=..., beta=...) -> Strategy`` under ``name`` (used by :func:`get_strategy`).

    Args:
        name: the strategy's name in :data:`STRATEGIES` (an existing one is replaced).
        factory: ``factory(activation=..., beta=...)`` returning a :class:`Strategy`.
    """
    STRATEGIES[name] = factory


register("random", lambda activation="softmax", beta=1.0: Random())
register("entropy", lambda activation="softmax", beta=1.0: Entropy(beta=beta))
register("logit_norm", lambda activation="softmax", beta=1.0: LogitNorm())
register("low_logit_norm", lambda activation="softmax", beta=1.0: Lowest(LogitNorm()))
register("residual", lambda activation="softmax", beta=1.0: Residual(activation=activation, beta=beta))
register("low_residual", lambda activation="softmax", beta=1.0: Lowest(Residual(activation=activation, beta=beta)))


def get_strategy(strategy, *, activation: str = "softmax", beta: float = 1.0) -> Strategy:
    """A :class:`Strategy` from itself or a registered name (built for the model's ``activation, beta``).

    Args:
        strategy: a :class:`Strategy` (returned as is) or a name in :data:`STRATEGIES`.
        activation: ``"softmax"`` or ``"identity"``, passed to the factory.
        beta: ``β > 0``, passed to the factory.

    Returns:
        The :class:`Strategy`.

    Raises:
        ValueError: ``strategy`` is neither a :class:`Strategy` nor a registered name, or (``residual``)
            ``activation`` is not one of the choices.
    """
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str) and strategy in STRATEGIES:
        return STRATEGIES[strategy](activation=activation, beta=beta)
    raise ValueError(f"strategy must be a Strategy or one of {sorted(STRATEGIES)}, got {strategy!r}")


def top_k(scores, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, highest first; ties broken by the lower index (deterministic).

    Args:
        scores: ``(n,)`` finite scores.
        k: how many to keep (``k > n`` keeps all).

    Returns:
        ``(min(k, n),)`` integer indices into ``scores``.

    Raises:
        ValueError: a score is NaN or infinite.
    """
    s = np.asarray(scores, dtype=float)
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite (a strategy returned NaN or inf)")
    return np.argsort(-s, kind="stable")[:k]


def check_selection(n_pool: int, k, strategy: Strategy, has_labels: bool, has_key: bool) -> int:
    """Validate a selection request.

    Args:
        n_pool: the number of candidates.
        k: how many to select.
        strategy: the :class:`Strategy`.
        has_labels: whether the pool's pre-training labels were given.
        has_key: whether a ``jax.random`` key was given.

    Returns:
        ``k`` as an int.

    Raises:
        ValueError: ``k`` not an integer with ``1 ≤ k ≤ n_pool``, a label-based strategy without
            labels, or a random strategy without a key.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= n_pool:
        raise ValueError(f"k must be an integer with 1 <= k <= pool size = {n_pool}, got {k!r}")
    if strategy.needs_labels and not has_labels:
        raise ValueError(f"strategy {strategy!r} scores the pre-training residual: pool_Y (the pool's "
                         "pre-training labels, reuse variant) is required")
    if strategy.needs_key and not has_key:
        raise ValueError(f"strategy {strategy!r} is random: key (a jax.random key) is required")
    return int(k)


def select(pool_X, k, strategy, *, S_hat, pool_Y=None, key=None, activation: str = "softmax",
           beta: float = 1.0, chunk: int = 8192) -> np.ndarray:
    """Indices (into ``pool_X``, highest score first) of the ``k`` candidates to label.

    Keeps the top ``k`` of ``s(Ĥ, Y)`` with ``Ĥ = H(Ŝ; X)`` (docs/model.md §3; the theory's counterpart
    is the indicator ``1{s > t_φ}``, docs/theory.md §5.3). Deterministic given its inputs.

    Args:
        pool_X: ``(n_pool, T, D)`` candidate inputs.
        k: how many to select, an integer in ``[1, n_pool]``.
        strategy: a :class:`Strategy` or a name in :data:`STRATEGIES` (built for ``activation, beta``).
        S_hat: ``(D, D)`` frozen pre-trained matrix ``Ŝ``.
        pool_Y: ``(n_pool, T, T)`` pre-training labels of the candidates (label-based strategies,
            reuse variant), or ``None``.
        key: a ``jax.random`` key (random strategies), or ``None``.
        activation: ``"softmax"`` or ``"identity"`` (for strategies that apply ``σ``).
        beta: ``β > 0``, the activation's inverse temperature.
        chunk: candidates per batch when computing the logits (memory only).

    Returns:
        ``(k,)`` integer indices into ``pool_X``, highest score first.

    Raises:
        ValueError: an unknown ``strategy``, ``pool_X`` not 3-dimensional, ``k`` not in ``[1, n_pool]``,
            a missing ``pool_Y`` or ``key`` that the strategy needs, ``pool_Y`` of the wrong shape, or
            a non-finite score.
    """
    strategy = get_strategy(strategy, activation=activation, beta=beta)
    pool_X = jnp.asarray(pool_X)
    if pool_X.ndim != 3:
        raise ValueError(f"pool_X must have shape (n_pool, T, D), got {pool_X.shape}")
    n_pool = int(pool_X.shape[0])
    k = check_selection(n_pool, k, strategy, pool_Y is not None, key is not None)
    if pool_Y is not None and tuple(np.shape(pool_Y)) != (n_pool, pool_X.shape[1], pool_X.shape[1]):
        raise ValueError(f"pool_Y must have shape (n_pool, T, T) = {(n_pool, pool_X.shape[1], pool_X.shape[1])}, "
                         f"got {np.shape(pool_Y)}")
    H_hat = jnp.concatenate([attention_logits(S_hat, pool_X[i:i + chunk]) for i in range(0, n_pool, chunk)])
    return top_k(strategy.score(H_hat, pool_Y, key), k)
