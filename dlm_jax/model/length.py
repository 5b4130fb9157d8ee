"""The length predictor: backbone hidden states of the prompt -> a distribution over response lengths.

As the released model (`src/model/dd_model.py`: `length_trm`, `length_predictor`): one post-LN transformer layer
(torch's `nn.TransformerEncoderLayer` defaults: ReLU MLP of the backbone's intermediate size, dropout, LayerNorm
eps 1e-5) on the (stop-gradient) prompt states, mean pool over non-pad tokens, then Linear(hidden ->
intermediate) -> tanh -> Linear to `num_classes` (the position-table size, 514 for XLM-R). Trained as a separate
stage with the backbone frozen. Class c is the response length c incl. `</s>` (the released labels are shifted by
two, excl. `</s>` and minus one; the decoded lengths are the same).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from dlm_jax.model import axes
from dlm_jax.model.configs import ModelConfig
from dlm_jax.model.encoder import Block
from dlm_jax.model.layers import Einsum, padding_bias


class LengthPredictor(nn.Module):
    cfg: ModelConfig
    num_classes: int

    @classmethod
    def for_backbone(cls, cfg: ModelConfig) -> "LengthPredictor":
        """The head of a backbone: one class per position of its table (the paper's 514 for XLM-R)."""
        return cls(cfg, num_classes=cfg.max_positions)

    def init_params(self, rng: jax.Array) -> dict:
        """Unboxed params (call under `jax.eval_shape` for their shapes alone)."""
        dummy = jnp.zeros((1, 4, self.cfg.hidden_size)), jnp.ones((1, 4), jnp.int32)
        return nn.unbox(self.init(rng, *dummy)["params"])

    @nn.compact
    def __call__(self, hidden: jax.Array, attention_mask: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """hidden [batch, length, embed] (prompt only), attention_mask [batch, length] -> logits [batch, classes]."""
        cfg = self.cfg.replace(family="roberta", remat="none", scan_layers=False, layer_norm_eps=1e-5,
                               attention="einsum")
        x = jax.lax.stop_gradient(hidden).astype(jnp.dtype(cfg.dtype))
        x, _ = Block(cfg, activation="relu", name="layer")(x, padding_bias(attention_mask), deterministic)
        m = attention_mask.astype(jnp.float32)[..., None]
        pooled = (x.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1.0)
        h = jnp.tanh(Einsum(shape=(cfg.hidden_size, cfg.intermediate_size), kernel_axes=(axes.EMBED, None),
                            eq="be,ef->bf", bias_axes=(None,), name="dense")(pooled))
        return Einsum(shape=(cfg.intermediate_size, self.num_classes), kernel_axes=(None, axes.CLASSES),
                      eq="bf,fc->bc", bias_axes=(axes.CLASSES,), name="out")(h).astype(jnp.float32)


def length_loss(logits: jax.Array, target_lengths: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CE of the length classifier; targets = number of response tokens including `</s>` ([batch] int)."""
    logp = jax.nn.log_softmax(logits, -1)
    target = jnp.clip(target_lengths, 0, logits.shape[-1] - 1)
    nll = -jnp.take_along_axis(logp, target[:, None], axis=-1)[:, 0]
    pred = jnp.argmax(logits, -1)
    return nll.mean(), {"length_loss": nll.mean(), "length_accuracy": (pred == target).mean(),
                        "length_abs_error": jnp.abs(pred - target).mean()}
