"""Parameters of the solvable attention model (docs/model.md §5), validated at construction.

Two frozen dataclasses hold a *setting* of the model, shared verbatim by the
state evolution (``D → ∞``) and the finite-``D`` simulator:

* :class:`PretrainParams` — the data-abundant task
  ``Y = σ(H(S0; X) + √Δ Ξ)`` (or ``σ(H(S0; X)) + √Δ Ξ``), ``n = α D²`` samples,
  nuclear-norm ERM with strength ``λ``;
* :class:`FinetuneParams` — the data-scarce task with target
  ``S1 = S0 + γ v vᵀ/√D``, ``n' = α' D`` samples, rank-one LoRA ``Ŝ + u uᵀ/√D``
  with ridge ``λ'`` (``λ' = inf``: no adaptation).

Every bad value raises :class:`ValueError` naming the parameter and the
allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

ACTIVATIONS = ("softmax", "identity")
NOISE_CONVENTIONS = ("logits", "output")


def _check_real(name: str, value, *, lower=None, lower_open=False, allow_inf=False) -> float:
    """Validate one real parameter; return it as a float.

    ``lower``: the bound; ``lower_open``: strict inequality; ``allow_inf``: ``+inf`` allowed.
    """
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    rng = _range_text(lower, lower_open, allow_inf)
    if math.isnan(x):
        raise ValueError(f"{name} must be a number in {rng}, got NaN")
    if math.isinf(x) and not (allow_inf and x > 0):
        raise ValueError(f"{name} must be finite, in {rng}, got {x}")
    if lower is not None and (x < lower or (lower_open and x == lower)):
        raise ValueError(f"{name} must be in {rng}, got {x}")
    return x


def _range_text(lower, lower_open, allow_inf) -> str:
    if lower is None:
        return "(-inf, inf)"
    left = "(" if lower_open else "["
    right = "inf]" if allow_inf else "inf)"
    return f"{left}{lower:g}, {right}"


def _check_int(name: str, value, *, lower: int) -> int:
    try:
        integral = not isinstance(value, bool) and float(value).is_integer()
    except (TypeError, ValueError):  # None, strings, arrays: not an integer either
        integral = False
    if not integral:
        raise ValueError(f"{name} must be an integer >= {lower}, got {value!r}")
    v = int(value)
    if v < lower:
        raise ValueError(f"{name} must be an integer >= {lower}, got {v}")
    return v


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


@dataclass(frozen=True)
class PretrainParams:
    """Setting of the pre-training task (docs/model.md §2, §5).

    Attributes:
        alpha: ``α > 0``, samples per ``D²`` (``n = round(α D²)``).
        delta: ``Δ ≥ 0``, label-noise variance.
        lam: ``λ ≥ 0``, nuclear-norm (weight-decay) strength in
            ``(1/(2D)) Σ_μ ‖Y_μ − σ(H(S; X_μ))‖²_F + λ Tr S``.
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``, inverse temperature of the activation.
        kappa0: ``κ0 > 0``, teacher width ratio (``S0 = W0ᵀW0/(√κ0 D)``).
        kappa: ``κ > 0``, student width ratio (rank of ``Ŝ`` at most ``κ D``).
        activation: ``"softmax"`` or ``"identity"`` (``σ(H) = (β/T) H``).
        noise: ``"logits"`` (``σ(H + √Δ Ξ)``, ``Ξ`` GOE) or ``"output"``
            (``σ(H) + √Δ Ξ``, ``Ξ`` i.i.d.).

    Raises:
        ValueError: at construction, a value out of its range (``alpha``, ``beta``, ``kappa0``,
            ``kappa`` must be real and ``> 0``; ``delta``, ``lam`` real and ``≥ 0``, all finite; ``T`` an
            integer ``≥ 1``, ``≥ 2`` with softmax; ``activation``, ``noise`` one of the choices).
    """

    alpha: float
    delta: float
    lam: float
    T: int = 3
    beta: float = 1.0
    kappa0: float = 1.0
    kappa: float = 1.0
    activation: str = "softmax"
    noise: str = "logits"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("alpha", _check_real("alpha", self.alpha, lower=0.0, lower_open=True))
        set_("delta", _check_real("delta", self.delta, lower=0.0))
        set_("lam", _check_real("lam", self.lam, lower=0.0))
        set_("beta", _check_real("beta", self.beta, lower=0.0, lower_open=True))
        set_("kappa0", _check_real("kappa0", self.kappa0, lower=0.0, lower_open=True))
        set_("kappa", _check_real("kappa", self.kappa, lower=0.0, lower_open=True))
        set_("activation", _check_choice("activation", self.activation, ACTIVATIONS))
        set_("noise", _check_choice("noise", self.noise, NOISE_CONVENTIONS))
        T = _check_int("T", self.T, lower=1)
        if self.activation == "softmax" and T < 2:
            raise ValueError(f"T must be >= 2 with the softmax activation, got {T}")
        set_("T", T)

    @property
    def rho0(self) -> float:
        """``ρ0 = lim Tr(S0²)/D = 1 + κ0`` for the Marchenko–Pastur teacher."""
        return 1.0 + self.kappa0

    def replace(self, **changes) -> "PretrainParams":
        """A copy with some fields changed (validated again).

        Args:
            **changes: field name → new value.

        Returns:
            The new :class:`PretrainParams`.

        Raises:
            ValueError: a changed value out of its range.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dictionary.

        Returns:
            ``{field: value}``.
        """
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinetuneParams:
    """Setting of the rank-one LoRA fine-tuning task (docs/model.md §3, §5).

    Attributes:
        alpha_prime: ``α' > 0``, samples per ``D`` (``n' = round(α' D)``).
        lam_prime: ``λ' ≥ 0`` ridge on ``u`` (``inf``: no adaptation, ``û = 0``).
        delta_prime: ``Δ' ≥ 0`` label noise of the fine-tuning task.
        gamma: ``γ > 0``, strength of the new direction, ``S1 = S0 + γ v vᵀ/√D``.
        reuse: fine-tuning inputs are ``n'`` of the pre-training inputs.
        recalibrate: train ``c`` in ``c Ŝ + u uᵀ/√D`` as well.

    Raises:
        ValueError: at construction, a value out of its range (``alpha_prime``, ``gamma`` real, finite and
            ``> 0``; ``delta_prime`` real, finite, ``≥ 0``; ``lam_prime`` real, ``≥ 0``, ``+inf`` allowed).
    """

    alpha_prime: float
    lam_prime: float = 1.0
    delta_prime: float = 0.0
    gamma: float = 1.0
    reuse: bool = False
    recalibrate: bool = False

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("alpha_prime", _check_real("alpha_prime", self.alpha_prime, lower=0.0, lower_open=True))
        set_("lam_prime", _check_real("lam_prime", self.lam_prime, lower=0.0, allow_inf=True))
        set_("delta_prime", _check_real("delta_prime", self.delta_prime, lower=0.0))
        set_("gamma", _check_real("gamma", self.gamma, lower=0.0, lower_open=True))
        set_("reuse", bool(self.reuse))
        set_("recalibrate", bool(self.recalibrate))

    @property
    def adapts(self) -> bool:
        """False when ``λ' = inf`` (the pre-trained model is used as is)."""
        return not math.isinf(self.lam_prime)

    def replace(self, **changes) -> "FinetuneParams":
        """A copy with some fields changed (validated again).

        Args:
            **changes: field name → new value.

        Returns:
            The new :class:`FinetuneParams`.

        Raises:
            ValueError: a changed value out of its range.
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """The fields as a dictionary.

        Returns:
            ``{field: value}``.
        """
        return dataclasses.asdict(self)


def make_params(alpha, alpha_prime, delta, lam, *, lam_prime=1.0, T=3, beta=1.0, kappa0=1.0,
                kappa=1.0, gamma=1.0, activation="softmax", delta_prime=None, noise="logits",
                reuse=False, recalibrate=False) -> tuple[PretrainParams, FinetuneParams]:
    """Build and validate both settings from the flat keyword API (``delta_prime`` defaults to ``delta``).

    Args:
        alpha: ``α > 0``, pre-training samples per ``D²``.
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D``.
        delta: ``Δ ≥ 0``, pre-training label noise.
        lam: ``λ ≥ 0``, nuclear-norm strength.
        lam_prime: ``λ' ≥ 0`` (``inf``: no adaptation), LoRA ridge.
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``.
        kappa0: ``κ0 > 0``.
        kappa: ``κ > 0``.
        gamma: ``γ > 0``.
        activation: ``"softmax"`` or ``"identity"``.
        delta_prime: ``Δ' ≥ 0`` (default ``Δ``).
        noise: ``"logits"`` or ``"output"``.
        reuse: fine-tuning inputs drawn from the pre-training inputs.
        recalibrate: also train the scalar ``c``.

    Returns:
        ``(PretrainParams, FinetuneParams)``.

    Raises:
        ValueError: a value out of its range (see :class:`PretrainParams`, :class:`FinetuneParams`).
    """
    pre = PretrainParams(alpha=alpha, delta=delta, lam=lam, T=T, beta=beta, kappa0=kappa0,
                         kappa=kappa, activation=activation, noise=noise)
    fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=lam_prime,
                          delta_prime=pre.delta if delta_prime is None else delta_prime,
                          gamma=gamma, reuse=reuse, recalibrate=recalibrate)
    return pre, fine


def check_seed(seed) -> int:
    """Validate a random seed.

    Args:
        seed: the seed, an integer ``≥ 0`` (a float with an integer value is accepted).

    Returns:
        ``seed`` as an int.

    Raises:
        ValueError: ``seed`` not an integer ``≥ 0`` (``1.5``, ``-1``, ``None``, a string).
    """
    return _check_int("seed", seed, lower=0)


def check_dimension(D) -> int:
    """Validate the embedding dimension ``D ≥ 2``.

    Args:
        D: the dimension (an integer-valued number).

    Returns:
        ``D`` as an int.

    Raises:
        ValueError: ``D`` not an integer ``≥ 2``.
    """
    return _check_int("D", D, lower=2)
