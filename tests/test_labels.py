"""The labels of both noise conventions (solvable_attention/labels.py), docs/model.md §2."""

import jax
import numpy as np
import pytest

from solvable_attention.data import noisy_labels
from solvable_attention.labels import labels_from_draw
from solvable_attention.random_matrices import goe_from_square


def test_labels_from_draw_is_the_one_label_formula():
    """``noisy_labels`` is ``labels_from_draw`` of a standard-normal draw from the same key, the GOE
    symmetrisation is the same on numpy and JAX arrays, and an unknown convention is refused.
    Tolerance: numpy vs JAX float32 round-off (rtol 1e-6)."""
    key = jax.random.PRNGKey(2)
    H = jax.random.normal(jax.random.PRNGKey(3), (50, 3, 3))
    G = jax.random.normal(key, H.shape, H.dtype)
    for noise in ("logits", "output"):
        np.testing.assert_array_equal(noisy_labels(key, H, 0.3, "softmax", 1.0, noise),
                                      labels_from_draw(H, G, 0.3, "softmax", 1.0, noise))
    Gn = np.asarray(G)
    np.testing.assert_allclose(goe_from_square(Gn), goe_from_square(G), rtol=1e-6)
    np.testing.assert_allclose(goe_from_square(Gn, 4.0), goe_from_square(Gn) / 2.0, rtol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        labels_from_draw(H, G, 0.3, "softmax", 1.0, "input")
