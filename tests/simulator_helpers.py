"""A small teacher–student problem shared by the simulator tests (objectives, pre-training and LoRA fits)."""

import jax

from solvable_attention.data import sample_inputs, sample_labels, sample_teacher


def problem(D=16, alpha=0.4, T=3, activation="softmax", delta=0.5, seed=0):
    """``(teacher, X, Y)``: a Wishart teacher of dimension ``D``, ``round(α D²)`` input sequences of ``T``
    tokens and their labels at label noise ``Δ = delta`` (logit noise, ``β = 1``)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    teacher = sample_teacher(k1, D)
    X = sample_inputs(k2, int(round(alpha * D * D)), T, D)
    Y = sample_labels(k3, teacher.S0, X, delta, activation, 1.0, "logits")
    return teacher, X, Y
