"""Data: vocabulary, features, file readers, seqio tasks and mixtures, evaluation protocols, metrics, batches.

The modules that import TensorFlow (through seqio) import it first through `dlm_jax.quiet`, so its start-up
lines never reach the user; `features` and `metrics` stay free of it.
"""
