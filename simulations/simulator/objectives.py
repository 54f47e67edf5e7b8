"""The two training objectives of docs/model.md §2–§3, as chunked, jit-compiled JAX functions.

Pre-training (on ``S``, or on ``W`` with ``S_W = WᵀW/(√κ D)``):

    L(S) = (1/(2D)) Σ_μ ‖Y_μ − σ(H(S; X_μ))‖²_F          (+ λ Tr S, handled by the prox)
    F(W) = (1/(2D)) Σ_μ ‖Y_μ − σ(H(S_W; X_μ))‖²_F + λ/(√κ D) ‖W‖²_F

Fine-tuning (rank-one LoRA on the frozen ``Ŝ``, logits ``c Ĥ_ν + z_ν z_νᵀ − (‖u‖²/D) I``,
``z_ν = X'_ν u/√D``, ``c = 1`` unless recalibrating):

    L'(u, c) = (1/2) Σ_ν ‖Y'_ν − σ(c Ĥ_ν + z_ν z_νᵀ − (‖u‖²/D) I)‖²_F + (λ'/2) ‖u‖²

Sums over samples run in chunks (``lax.scan`` with per-chunk ``value_and_grad``:
gradient accumulation), so memory is bounded by one chunk whatever ``n``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from solvable_attention.activations import apply_activation
from solvable_attention.attention import attention_logits, factorized_logits, lora_logits


def chunk_samples(X, Y, chunk: int):
    """Pad ``(X, Y)`` to a multiple of ``chunk`` and reshape to ``(n_chunks, chunk, ...)``.

    Returns ``(Xc, Yc, weights)`` with weight 0 on padded samples.
    """
    n = X.shape[0]
    chunk = max(1, min(chunk, n))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    w = jnp.concatenate([jnp.ones(n, X.dtype), jnp.zeros(pad, X.dtype)])
    Xp = jnp.concatenate([X, jnp.zeros((pad, *X.shape[1:]), X.dtype)])
    Yp = jnp.concatenate([Y, jnp.zeros((pad, *Y.shape[1:]), Y.dtype)])
    return (Xp.reshape(n_chunks, chunk, *X.shape[1:]), Yp.reshape(n_chunks, chunk, *Y.shape[1:]),
            w.reshape(n_chunks, chunk))


def _squared_residual(logits, Y, w, activation, beta):
    r = Y - apply_activation(logits, activation, beta)
    return jnp.sum(w * jnp.sum(r * r, axis=(-1, -2)))


@partial(jax.jit, static_argnames=("activation",))
def pretrain_loss(S, Xc, Yc, wc, activation, beta):
    """``L(S) = (1/(2D)) Σ_μ ‖Y_μ − σ(H(S; X_μ))‖²_F`` (data term only)."""
    D = S.shape[0]

    def body(acc, batch):
        X, Y, w = batch
        return acc + _squared_residual(attention_logits(S, X), Y, w, activation, beta), None

    total, _ = jax.lax.scan(body, jnp.zeros((), S.dtype), (Xc, Yc, wc))
    return total / (2 * D)


@partial(jax.jit, static_argnames=("activation",))
def pretrain_loss_and_grad(S, Xc, Yc, wc, activation, beta):
    """``(L(S), ∇L(S))`` with the gradient symmetrised (the gradient on ``Sym(D)``)."""
    D = S.shape[0]

    def chunk_loss(S_, X, Y, w):
        return _squared_residual(attention_logits(S_, X), Y, w, activation, beta) / (2 * D)

    vg = jax.value_and_grad(chunk_loss)

    def body(acc, batch):
        v, g = vg(S, *batch)
        return (acc[0] + v, acc[1] + g), None

    (val, grad), _ = jax.lax.scan(body, (jnp.zeros((), S.dtype), jnp.zeros_like(S)), (Xc, Yc, wc))
    return val, 0.5 * (grad + grad.T)


# --- Pre-training through the logits -----------------------------------------------------------------
# ``H(S; X)`` is linear in ``S``. FISTA (pretraining_fit.fit_proximal) evaluates the loss at the
# extrapolated point ``Y_k = S_k + c (S_k − S_{k−1})``, whose logits are ``H_k + c (H_k − H_{k−1})``
# without a product with the inputs; and the gradient needs only one product, ``Σ_μ X_μᵀ G_μ X_μ`` with
# ``G = ∂L/∂H`` (the chain rule written out, instead of autodiff through ``X S Xᵀ``, which XLA
# evaluates as several batched products). One FISTA iteration then costs two products of the
# ``(nT × D)`` inputs with a ``D × D`` matrix plus one ``eigh`` (docs/model.md §2 for the model).


def split_samples(X, Y, chunk: int):
    """``(X, Y)`` cut into consecutive pieces of at most ``chunk`` samples (no padding).

    Args:
        X: ``(n, T, D)`` inputs.
        Y: ``(n, T, T)`` labels.
        chunk: samples per piece (memory only).

    Returns:
        ``(Xs, Ys)``: two tuples of arrays, ``(n_i, T, D)`` and ``(n_i, T, T)``.
    """
    n = X.shape[0]
    chunk = max(1, min(int(chunk), n))
    cuts = range(0, n, chunk)
    return tuple(X[i:i + chunk] for i in cuts), tuple(Y[i:i + chunk] for i in cuts)


def logits_split(S, Xs):
    """``H(S; X_μ)`` for the pieces ``Xs`` of :func:`split_samples` (a Python loop, unrolled under ``jit``:
    a ``lax.scan`` over pieces copies each slice, which measured twice as slow).

    Args:
        S: ``(D, D)`` symmetric matrix.
        Xs: tuple of ``(n_i, T, D)`` inputs.

    Returns:
        Tuple of ``(n_i, T, T)`` logits ``(X S Xᵀ − Tr(S) I)/√D``: one flat ``(n_i T × D) @ (D × D)`` product
        per piece.
    """
    D = S.shape[0]
    out = []
    for X in Xs:
        T = X.shape[-2]
        XS = (X.reshape(-1, D) @ S).reshape(X.shape)
        H = jnp.sum(XS[..., :, None, :] * X[..., None, :, :], axis=-1)
        out.append((H - jnp.trace(S) * jnp.eye(T, dtype=H.dtype)) / jnp.sqrt(D))
    return tuple(out)


def loss_and_cotangent(Hs, Ys, activation, beta, D):
    """``L = (1/(2D)) Σ_μ ‖Y_μ − σ(H_μ)‖²_F`` from the logits, and its symmetrised ``G = ∂L/∂H``.

    Args:
        Hs: tuple of ``(n_i, T, T)`` logits.
        Ys: tuple of labels of the same shapes.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        D: the embedding dimension (the loss's ``1/(2D)``).

    Returns:
        ``(L, Gs)``: the scalar loss and a tuple of ``(n_i, T, T)`` cotangents.
    """
    def f(Hs_):
        return sum(_squared_residual(H, Y, 1.0, activation, beta) for H, Y in zip(Hs_, Ys)) / (2 * D)

    val, vjp = jax.vjp(f, Hs)
    (Gs,) = vjp(jnp.ones((), Hs[0].dtype))
    return val, tuple(0.5 * (G + jnp.swapaxes(G, -1, -2)) for G in Gs)


def gradient_from_cotangent(Gs, Xs):
    """``∇_S L = (Σ_μ X_μᵀ G_μ X_μ − Σ_μ Tr(G_μ) I)/√D`` for symmetric ``G = ∂L/∂H`` (chain rule of
    ``H = (X S Xᵀ − Tr S I)/√D``).

    Args:
        Gs: tuple of ``(n_i, T, T)`` symmetric cotangents.
        Xs: tuple of ``(n_i, T, D)`` inputs.

    Returns:
        The ``(D, D)`` symmetric gradient: one flat ``(D × n_i T) @ (n_i T × D)`` product per piece.
    """
    D = Xs[0].shape[-1]
    XGX = jnp.zeros((D, D), Xs[0].dtype)
    trace = 0.0
    for G, X in zip(Gs, Xs):
        T = X.shape[-2]
        GX = jnp.stack([sum(G[:, t, s, None] * X[:, s] for s in range(T)) for t in range(T)], axis=1)
        XGX = XGX + jax.lax.dot_general(X.reshape(-1, D), GX.reshape(-1, D), (((0,), (0,)), ((), ())))
        trace = trace + jnp.sum(jnp.trace(G, axis1=-2, axis2=-1))
    XGX = 0.5 * (XGX + XGX.T)
    return (XGX - trace * jnp.eye(D, dtype=XGX.dtype)) / jnp.sqrt(D)


def factorized_objective(W, Xc, Yc, wc, activation, beta, lam, kappa):
    """``F(W)`` including the weight decay ``λ/(√κ D) ‖W‖²_F`` (= ``λ Tr S_W``)."""
    D = W.shape[1]

    def body(acc, batch):
        X, Y, w = batch
        return acc + _squared_residual(factorized_logits(W, X, kappa), Y, w, activation, beta), None

    total, _ = jax.lax.scan(body, jnp.zeros((), W.dtype), (Xc, Yc, wc))
    return total / (2 * D) + lam / (jnp.sqrt(kappa) * D) * jnp.sum(W * W)


def lora_objective(params, H_hat, X, Y, activation, beta, lam_prime):
    """``L'(u, c) = (1/2) Σ_ν ‖Y'_ν − σ(c Ĥ_ν + z zᵀ − (‖u‖²/D) I)‖²_F + (λ'/2)‖u‖²``."""
    u, c = params
    r = Y - apply_activation(lora_logits(H_hat, X, u, c), activation, beta)
    return 0.5 * jnp.sum(r * r) + 0.5 * lam_prime * (u @ u)


def pretrain_logits_all(S, X, chunk: int = 8192):
    """``H(S; X_μ)`` for all samples (chunked)."""
    return jnp.concatenate([attention_logits(S, X[i:i + chunk]) for i in range(0, X.shape[0], chunk)])
