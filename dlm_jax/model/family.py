"""The model-family interface and its one registry.

A family (`ModelConfig.family`) is everything dlm_jax knows about one architecture, in one module of
`dlm_jax.model.families`: its Flax module, the checks of its config fields, its HuggingFace config conversion and
key table, its FLOP count and its row conventions. Code outside `dlm_jax.model` asks `family_of(cfg)` for these and
never compares a family's name (tests/test_architecture.py checks it), so a new family is one new module here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from dlm_jax.errors import ConfigError

# Not imported (model.configs imports this module, to check a config against its family): aliases for reading.
ModelConfig = Any  # dlm_jax.model.configs.ModelConfig
Rule = Any  # dlm_jax.model.keys.Rule
State = dict[str, Any]


def _no_check(cfg: ModelConfig) -> None:
    return None


def _same_state(state: State) -> State:
    return state


def _dense_keys(cfg: ModelConfig, length: int) -> int:
    return cfg.num_layers * length


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture. Callables take the (flat) `ModelConfig`; its fields are the serialised form (model.json)
    and `fields` names the ones this family reads beyond the shared dimensions."""

    name: str  # the value of ModelConfig.family
    description: str
    kind: str  # "encoder" (a masked LM), "encoder-decoder" or "decoder" (a causal LLM)
    module: Callable[..., Any]  # the Flax module class: module(cfg, decode=False)
    hf_model_types: tuple[str, ...]  # config.json `model_type` values read as this family
    from_hf: Callable[[dict[str, Any]], ModelConfig]
    body_matmul_params: Callable[[ModelConfig], int]  # FLOP count: the matmul params of the body
    head_matmul_params: Callable[[ModelConfig], int]  # ... of the head, per predicted position
    attention_keys: Callable[[ModelConfig, int], int] = _dense_keys  # keys per query, summed over attention products
    to_hf: Callable[[ModelConfig, dict[str, Any]], dict[str, Any]] | None = None  # None: no HF format to export to
    key_table: Callable[[ModelConfig], list[Rule]] | None = None
    check: Callable[[ModelConfig], None] = _no_check  # raises ConfigError naming the field and the fix
    state_in: Callable[[State], State] = _same_state  # an HF state dict before its keys are matched (fused tensors)
    state_out: Callable[[State], State] = _same_state  # the inverse, after export
    fields: tuple[str, ...] = ()
    position_offset: Callable[[ModelConfig], int] = lambda cfg: 0  # first position id of a real token
    # Row conventions: `<s> prompt </s> response </s>` (the prompt ends at the separator id) or `<s> prompt response
    # </s>`; a decoder LLM whose tokenizer lacks <pad> / <mask> gets them added (rows the mean of the others) when
    # it is trained with RDM; `shift` (position i - 1 predicts token i) is a decoder LLM's option only.
    prompt_separator: bool = False
    adds_diffusion_tokens: bool = False
    shiftable: bool = False
    grouped_scan: bool = False  # scanned layers are layer 0 apart plus groups of one pattern (ModelConfig.scan_groups)
    # GGUF (llama.cpp's format): the `general.architecture` values read as this family, its metadata -> an HF
    # config.json dict, and its tensor names -> HF keys ([(GGUF regex with {i}, HF key with {i}, array fix)] for an
    # HF config), after which the HF key table and shape checks apply as to any HF checkpoint.
    gguf_architectures: tuple[str, ...] = ()
    gguf_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    gguf_names: Callable[[dict[str, Any]], list[tuple[str, str, Callable[[Any], Any]]]] | None = None

    @property
    def exportable(self) -> bool:
        return self.to_hf is not None and self.key_table is not None


REGISTRY: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds `family` to the registry (each family module does this at import); returns it."""
    if family.name in REGISTRY:
        raise ValueError(f"model family {family.name!r} is registered twice")
    REGISTRY[family.name] = family
    return family


def family_of(cfg_or_name: Any) -> Family:
    """The registered family of a ModelConfig (or of a family name)."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.family
    if name not in REGISTRY:
        raise ConfigError(f"unknown model family {name!r}; choose one of {sorted(REGISTRY)}")
    return REGISTRY[name]


def family_for_model_type(model_type: Any) -> Family:
    """The family that reads a HuggingFace config.json's `model_type`."""
    for fam in REGISTRY.values():
        if model_type in fam.hf_model_types:
            return fam
    known = sorted(t for fam in REGISTRY.values() for t in fam.hf_model_types)
    raise ConfigError(f"config.json has model_type={model_type!r}; dlm_jax supports {known}")


def family_for_gguf(architecture: Any) -> Family:
    """The family that reads a GGUF file's `general.architecture`."""
    for fam in REGISTRY.values():
        if architecture in fam.gguf_architectures:
            return fam
    known = sorted(a for fam in REGISTRY.values() for a in fam.gguf_architectures)
    raise ConfigError(f"the GGUF file's architecture is {architecture!r}; dlm_jax reads {', '.join(known)} "
                      "(the decoder LLMs its Flax families cover)")
