"""Data: vocabulary, features, file readers, seqio tasks and mixtures, evaluation protocols, metrics, batches.

TensorFlow (under seqio and TFDS) is imported here first, quietly (`dlm_jax.quiet`).
"""
from dlm_jax.quiet import import_tensorflow

import_tensorflow()
