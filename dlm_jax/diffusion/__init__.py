"""RDM diffusion: the training objective, the unmask/remask sampler, length beam and likelihood scoring; the
autoregressive objective of the baselines."""
from dlm_jax.diffusion.autoregressive import DecodeConfig, Decoded, ar_loss, beam_search, greedy_decode
from dlm_jax.diffusion.likelihood import elbo_nll
from dlm_jax.diffusion.length_beam import build_inputs, select_best, top_lengths
from dlm_jax.diffusion.objective import RDMConfig, corrupt, rdm_loss
from dlm_jax.diffusion.sampler import STRATEGY_HELP, SampleOutput, SamplerConfig, keep_masked_table, sample

__all__ = ["ar_loss", "DecodeConfig", "Decoded", "beam_search", "greedy_decode",
           "RDMConfig", "rdm_loss", "corrupt", "SamplerConfig", "SampleOutput", "sample", "keep_masked_table",
           "STRATEGY_HELP", "elbo_nll", "build_inputs", "select_best", "top_lengths"]
