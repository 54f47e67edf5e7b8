"""Test configuration: float64 everywhere (as diffrax's tests do)."""

import jax

jax.config.update("jax_enable_x64", True)
