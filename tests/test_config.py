"""The run config: parsed once into typed settings, data parallelism from the rules, saved configs read back."""
import json
import sys
from pathlib import Path

import pytest

from dlm_jax import config as config_lib
from dlm_jax.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import demo, tiny  # noqa: E402


def test_parse_gives_typed_settings_once():
    run = config_lib.parse(demo.get_config(), num_devices=1, num_processes=1)
    assert run.sampler.steps == 10 and run.sampler.strategy == "reparam-uncond-deterministic-cosine"
    assert run.optimizer.lr == 2e-3 and run.optimizer.schedule == "warmup_cosine"
    assert run.diffusion.pool_rows == 64  # 0 resolves to one pool per data shard's micro-batch
    assert run.diffusion.rdm(mask_id=103).max_predictions == 1024
    assert run.model.overrides["hidden_dropout"] == 0.0 and run.mesh.data_parallel_size == 1
    assert run.data.train_limit is None and run.peak_tflops is None


def test_data_parallel_size_follows_the_rules_not_the_axis_names():
    c = tiny.get_config()
    c.batch_size = 4
    c.mesh.shape.data, c.mesh.shape.fsdp = 4, 2
    with pytest.raises(ConfigError, match="data-parallel size 8"):  # default rules: batch over (data, fsdp)
        config_lib.parse(c, num_devices=8, num_processes=1)
    c.mesh.rules = (("batch", "data"),)  # batch over data only: 4 ways
    assert config_lib.parse(c, num_devices=8, num_processes=1).mesh.data_parallel_size == 4


def test_saved_config_reads_back_over_the_defaults():
    c = tiny.get_config()
    c.mesh.rules = (("batch", ("data", "fsdp")), ("vocab", None))
    saved = json.loads(c.to_json_best_effort())
    del saved["prng_impl"]  # a key an older run did not save
    back = config_lib.load_saved(json.dumps(saved))
    assert back.prng_impl == "threefry2x32" and back.mesh.rules == (("batch", ("data", "fsdp")), ("vocab", None))
    run = config_lib.parse(back, num_devices=8, num_processes=1)
    assert run == config_lib.parse(c, num_devices=8, num_processes=1)


def test_unknown_override_field_and_bad_values_name_the_key():
    c = tiny.get_config()
    c.model.overrides.hidden_sise = 3
    with pytest.raises(ConfigError, match="model.overrides.*hidden_sise"):
        config_lib.parse(c, num_devices=1, num_processes=1)
    c = tiny.get_config()
    c.optimizer.schedule = "cosine"
    with pytest.raises(ConfigError, match="optimizer.schedule='cosine'"):
        config_lib.parse(c, num_devices=1, num_processes=1)
    c = tiny.get_config()
    c.batch_size = 6
    with pytest.raises(ConfigError, match="number of processes"):
        config_lib.parse(c, num_devices=1, num_processes=4)
    c = tiny.get_config()
    c.eval_every_steps = 100  # periodic evaluation runs in several processes too (tests/test_multiprocess.py)
    assert config_lib.parse(c, num_devices=4, num_processes=2).eval_every_steps == 100


def test_dump_prints_the_config_and_trains_nothing(tmp_path):
    from conftest import cli
    r = cli("dlm_jax.train", "--config", "configs/iwslt14.py:large", "--dump", "--config.optimizer.lr=1e-4")
    assert r.returncode == 0, r.stderr[-2000:]
    dumped = json.loads(r.stdout)
    assert dumped["model"]["name"] == "xlmr-large" and dumped["optimizer"]["lr"] == 1e-4


def test_pod_variants_set_the_fit_measured_for_the_slice():
    """`,pod=<slice>` sets what compiling for that TPU slice measured (configs/common.py POD_FITS); the parsed
    run splits the batch over every chip with the measured accumulation; a slice never measured is an error
    that says how to measure it."""
    from configs import flan2022, iwslt14
    c = flan2022.get_config("xxl,pod=v5e-256")
    assert (c.optimizer.grad_accum, c.model.remat, c.model.scan_layers, c.diffusion.head_chunk) == (
        1, "full", True, 8192)  # with the fused head (grad_accum 2 with whole logits)
    run = config_lib.parse(c, num_devices=256, num_processes=64)
    assert dict(run.mesh.sizes) == {"data": 1, "fsdp": 256, "tensor": 1} and run.mesh.data_parallel_size == 256
    assert (run.batch_size, run.micro_batch, run.diffusion.head_chunk) == (2048, 2048, 8192)
    assert flan2022.get_config("xxl,pod=v5p-128").optimizer.grad_accum == 1
    v4 = flan2022.get_config("xxl,pod=v4-128")  # the fused head: grad_accum 2 (4 with whole logits)
    assert (v4.optimizer.grad_accum, v4.diffusion.head_chunk) == (2, 8192)
    assert flan2022.get_config("llama-13b,pod=v5e-256").optimizer.grad_accum == 1  # 10.44 of 16 GiB
    c = iwslt14.get_config("large,pod=v4-16")
    assert (c.optimizer.grad_accum, c.model.remat, dict(c.mesh.shape)["fsdp"]) == (4, "full", -1)
    assert iwslt14.get_config("large").optimizer.grad_accum == 1  # no pod: the defaults stay
    with pytest.raises(ValueError, match="no measured fit for xxl on 'v4-8'.*compile_memory.py --coupled --tpu"):
        flan2022.get_config("xxl,pod=v4-8")


def test_a_negative_head_chunk_is_one_config_error():
    c = tiny.get_config()
    c.diffusion.head_chunk = -1
    with pytest.raises(ConfigError, match="head_chunk must be >= 0"):
        config_lib.parse(c)
