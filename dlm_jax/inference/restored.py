"""A trained run restored for inference: params only, straight into the requested mesh, nothing else built.

Shapes come from `jax.eval_shape` over the run's saved ModelConfig (`model.json`), the tokenizer from the run's
own copy, so no HuggingFace checkpoint is read and no optimizer is built. `RestoredRun.generator()` is the one
inference object that `evaluate` and `generate` use.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import ml_collections
from jax.sharding import Mesh

from dlm_jax import config as config_lib
from dlm_jax.data.features import FeatureSpec
from dlm_jax.data.vocab import HFVocabulary
from dlm_jax.errors import ConfigError
from dlm_jax.inference.generator import Generator
from dlm_jax.model import MaskedLM, ModelConfig, abstract_params, family_of, model_for
from dlm_jax.model.length import LengthPredictor
from dlm_jax.model.prune import VocabMap, tokenizer_mask_id
from dlm_jax.parallel import make_mesh, sharded_abstract
from dlm_jax.rundir import RunDir


@dataclasses.dataclass
class RestoredRun:
    """What inference needs of a run: the typed config, the model and params, the vocabulary, the step."""

    run: config_lib.RunConfig
    model: MaskedLM  # or Seq2SeqLM (`model_for`)
    params: Any
    vocab: HFVocabulary
    vocab_map: VocabMap | None
    step: int
    mesh: Mesh
    length_model: LengthPredictor | None = None
    length_params: Any = None
    micro_batch: int = 8  # rows per model evaluation (Generator.micro_batch)

    def feature_spec(self) -> FeatureSpec:
        """The row layout for evaluation: the run's length (at most the model's), overlong examples skipped as in
        the paper."""
        return self.run.data.feature_spec(self.vocab, self.model.cfg.max_length, overlong="skip",
                                          separator=family_of(self.model.cfg).prompt_separator)

    @property
    def max_length(self) -> int:
        return self.feature_spec().max_length

    def generator(self) -> Generator:
        """The run's inference object: the diffusion sampler and ELBO for RDM runs; for AR runs
        (`objective="ar"`) KV-cache decoding (`decoding.*`) and exact log-likelihoods."""
        return Generator.with_vocab(self.model, self.params, self.vocab, self.max_length, vocab_map=self.vocab_map,
                                    length_model=self.length_model, length_params=self.length_params,
                                    mesh=self.mesh, micro_batch=self.micro_batch,
                                    decoding=self.run.decoding if self.run.objective == "ar" else None,
                                    head_chunk=self.run.diffusion.head_chunk)

    def with_length_head(self, length_workdir: str | Path, *, step: int | None = None) -> "RestoredRun":
        """Adds the length predictor trained in `length_workdir` (a run of configs/length_predictor.py)."""
        head = LengthPredictor.for_backbone(self.model.cfg)
        abstract = jax.eval_shape(head.init_params, jax.random.key(0))  # replicated, as the length stage trains it
        params, _ = RunDir(length_workdir).restore_params(
            sharded_abstract(abstract, self.mesh, self.run.mesh.rules), step)
        return dataclasses.replace(self, length_model=head, length_params=params)


def single_device_mesh() -> Mesh:
    return make_mesh({"data": 1}, devices=jax.devices()[:1])


def restore_run(workdir: str | Path, *, config: ml_collections.ConfigDict | None = None, step: int | None = None,
                mesh: Mesh | None = None, micro_batch: int = 8) -> RestoredRun:
    """Restores the params of `workdir`'s checkpoint `step` (default: the latest) into `mesh` (default: one device).

    `config`: the run's config as the caller has it (e.g. the saved one with command-line overrides); default: the
    saved config. Its `model.*` values (dtype, attention, ...) apply to the saved ModelConfig.
    """
    rundir = RunDir(workdir)
    mesh = mesh if mesh is not None else single_device_mesh()
    config = ml_collections.ConfigDict((config if config is not None else rundir.read_config()).to_dict())
    config.mesh.shape = dict(mesh.shape)  # the inference mesh, not the one the run trained on
    run = config_lib.parse(config, num_devices=mesh.size)
    trained = rundir.read_config().get("objective", "rdm")
    if run.objective != trained:
        raise ConfigError(f"{workdir} was trained with objective={trained!r}; it cannot be restored as "
                          f"objective={run.objective!r} (drop --config.objective, or train a run with that objective)")
    rundir.checkpoint_step(step)  # a missing checkpoint is a clear error before anything is built
    saved = rundir.read_model_config()
    # the saved vocabulary size wins (a pruned run's is the pruned one, whatever `model.overrides` says)
    model_config: ModelConfig = run.model.apply(saved).replace(vocab_size=saved.vocab_size)
    params, got = rundir.restore_params(sharded_abstract(abstract_params(model_config), mesh, run.mesh.rules), step)
    vmap = rundir.read_vocab_map()
    vocab = HFVocabulary(rundir.read_tokenizer(), mask_id=tokenizer_mask_id(saved, vmap))
    return RestoredRun(run, model_for(model_config), params, vocab, vmap, got, mesh, micro_batch=micro_batch)


def restore_pretrained(source: str, *, mesh: Mesh | None = None, max_length: int = 2048,
                       overrides: dict[str, Any] | None = None) -> RestoredRun:
    """A pretrained decoder LLM as it is (no training run): an HF directory, a GGUF file or a named model
    ("smollm2-135m-instruct"), causal, decoded left to right with its KV cache (`decoding.*`: greedy by default).
    Rows hold `max_length` positions at most (and no more than the model's context). `overrides`: run-config
    values by dotted key (e.g. {"decoding.max_len_b": 64}), as `--config.*` gives them."""
    from dlm_jax.pretrained import load_pretrained
    mesh = mesh if mesh is not None else single_device_mesh()
    c = config_lib.base_config()
    c.objective, c.model.init, c.model.causal, c.model.prune_vocab = "ar", str(source), True, False
    c.decoding.beam_size, c.mesh.shape, c.data.max_length = 1, dict(mesh.shape), max_length
    if overrides:
        c.update_from_flattened_dict({k: v for k, v in overrides.items() if k != "model.init"})
    run = config_lib.parse(c, num_devices=mesh.size)
    pre = load_pretrained(source, mesh=mesh, rules=run.mesh.rules, **run.model.overrides)  # model.* (dtype, ...)
    if family_of(pre.config).kind != "decoder":
        raise ConfigError(f"{source} holds a {pre.config.family} model ({family_of(pre.config).kind}), not a decoder "
                          "LLM: only a decoder LLM generates as it is; finetune a masked LM with RDM first (make demo)")
    if pre.tokenizer is None:
        raise ConfigError(f"{source} has no tokenizer files; a pretrained model needs its tokenizer")
    return RestoredRun(run, pre.model, pre.params, HFVocabulary(pre.tokenizer), None, 0, mesh)

