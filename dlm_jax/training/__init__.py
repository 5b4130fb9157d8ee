"""Training: the pure train step (`step`: importable with only jax / flax / optax), run setup from a `RunConfig`
(`setup`), periodic hooks (`hooks`) and the loop (`loop.run`)."""
