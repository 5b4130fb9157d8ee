"""Training: falling loss, resume == uninterrupted, SIGTERM, sharded step == single-device step, config errors."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlm_jax import parallel
from dlm_jax.config import parse
from dlm_jax.inference import restore_run
from dlm_jax.training import loop
from dlm_jax.training.step import build_optimizer, diffusion_loss_fn, make_train_step
from dlm_jax.diffusion import RDMConfig
from dlm_jax.model import MaskedLM, get_config
from dlm_jax.model.axes import DEFAULT_RULES

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from configs import tiny  # noqa: E402


def _tiny_batch(b=8, length=12, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, vocab, (b, length)).astype(np.int32)
    resp = np.zeros((b, length), bool)
    resp[:, 5:10] = True
    pad = np.ones((b, length), np.int32)
    pad[:, 10:] = 0
    tokens[:, 10:] = 1
    return {"tokens": tokens, "response_mask": resp, "padding_mask": pad}


def _step_setup(mcfg, lr=1e-3):
    model = MaskedLM(mcfg)
    c = tiny.get_config()
    c.optimizer.lr, c.optimizer.warmup_steps, c.optimizer.schedule = lr, 1, "constant"
    tx, sched = build_optimizer(parse(c).optimizer, 100)
    loss_fn = diffusion_loss_fn(model, RDMConfig(mask_id=4, num_timesteps=10, num_t_buckets=2))
    return model, tx, make_train_step(loss_fn, tx, sched, grad_accum=1, seed=0)


def test_loss_falls_on_a_repeated_batch():
    mcfg = get_config("tiny-test", vocab_size=50, hidden_dropout=0.0, attention_dropout=0.0)
    model, tx, step = _step_setup(mcfg, lr=3e-3)
    batch = jax.tree.map(jnp.asarray, _tiny_batch())
    params = model.init(jax.random.key(0), batch["tokens"])["params"]
    state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params), "bad_steps": jnp.int32(0)}
    step = jax.jit(step)
    losses = []
    for _ in range(100):
        state, m = step(state, batch, None)
        losses.append(float(m["loss"]))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), losses


def test_non_finite_step_is_skipped_and_counted():
    mcfg = get_config("tiny-test", vocab_size=50)
    model, tx, step = _step_setup(mcfg)
    batch = jax.tree.map(jnp.asarray, _tiny_batch())
    params = nn.unbox(model.init(jax.random.key(0), batch["tokens"])["params"])
    bad = dict(params)
    bad["head_bias"] = bad["head_bias"].at[0].set(jnp.nan)
    state = {"step": jnp.int32(0), "params": bad, "opt_state": tx.init(bad), "bad_steps": jnp.int32(0)}
    new, m = jax.jit(step)(state, batch, None)
    assert int(m["skipped"]) == 1 and int(new["bad_steps"]) == 1
    np.testing.assert_array_equal(np.asarray(new["params"]["word"]["embedding"]),
                                  np.asarray(bad["word"]["embedding"]))


def test_sharded_step_matches_single_device():
    mcfg = get_config("tiny-test", vocab_size=48, hidden_size=32, num_heads=4, intermediate_size=64,
                      hidden_dropout=0.0, attention_dropout=0.0)
    model, tx, step = _step_setup(mcfg)
    batch = _tiny_batch(vocab=48)
    params = nn.unbox(model.init(jax.random.key(0), jnp.asarray(batch["tokens"]))["params"])
    state = {"step": jnp.int32(0), "params": params, "opt_state": tx.init(params), "bad_steps": jnp.int32(0)}
    ref_state, ref_m = jax.jit(step)(jax.tree.map(jnp.copy, state), jax.tree.map(jnp.asarray, batch), None)

    mesh = parallel.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.asarray(batch["tokens"]))["params"])
    p_sh = parallel.logical_to_shardings(abstract, mesh, DEFAULT_RULES)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        sp = jax.device_put(params, p_sh)
        sstate = parallel.replicate_unplaced({"step": jnp.int32(0), "params": sp, "opt_state": jax.jit(tx.init)(sp),
                                             "bad_steps": jnp.int32(0)}, mesh)
        gb = parallel.global_batch(batch, mesh, DEFAULT_RULES)
        new, m = parallel.jit_train_step(step, sstate, mesh, DEFAULT_RULES)(sstate, gb, None)
    assert new["params"]["layers_0"]["mlp"]["wi"]["kernel"].sharding.spec == jax.sharding.PartitionSpec(
        "fsdp", "tensor")
    np.testing.assert_allclose(float(m["loss"]), float(ref_m["loss"]), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(ref_state["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6)


def _cfg(**kw):
    c = tiny.get_config()
    c.num_train_steps, c.checkpoint_every_steps, c.log_every_steps = 6, 3, 1
    c.data.train_limit, c.eval_every_steps = 96, 0
    for k, v in kw.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def _losses(workdir):
    rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@pytest.mark.parametrize("pack", [False, True])
def test_resume_gives_the_same_run(tmp_path, pack):
    full = tmp_path / "full"
    loop.run(parse(_cfg(**{"data.pack": pack})), full)
    part = tmp_path / "part"
    loop.run(parse(_cfg(num_train_steps=3, **{"data.pack": pack})), part)  # "killed" after step 3 (its checkpoint)
    loop.run(parse(_cfg(**{"data.pack": pack})), part)  # the same command again resumes at step 3
    # a run's first (compile) step is not logged: compare every step both runs logged, before and after resuming
    a, b = _losses(full), _losses(part)
    common = sorted(set(a) & set(b))
    assert {2, 3, 5, 6} <= set(common)
    np.testing.assert_allclose([a[k] for k in common], [b[k] for k in common], rtol=1e-6)
    pa, pb = restore_run(full).params, restore_run(part).params
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a half-written checkpoint directory (as a crash leaves it) is ignored
    (part / "checkpoints" / "9.orbax-checkpoint-tmp-123").mkdir()
    assert restore_run(part).step == 6


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "dlm_jax.train", "--config", "configs/tiny.py", "--workdir",
                             str(tmp_path), "--config.num_train_steps=100000", "--config.log_every_steps=1",
                             "--config.checkpoint_every_steps=100000"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.5)
    assert (tmp_path / "metrics.jsonl").exists(), proc.stderr.read().decode()[-2000:] if proc.poll() else "timeout"
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(120)
    assert rc == 0, proc.stderr.read().decode()[-2000:]
    steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps and max(steps) >= 1


def test_bad_config_values_fail_early_with_the_key():
    c = _cfg(batch_size=6)  # 8 simulated devices on the data axis
    with pytest.raises(ValueError, match="batch_size=6.*data-parallel"):
        parse(c)
    with pytest.raises(ValueError, match="mesh"):
        parse(_cfg(**{"mesh.shape.tensor": 3}))
    with pytest.raises(ValueError, match="unknown sampler strategy"):
        parse(_cfg(**{"sampler.strategy": "greedy"}))
    with pytest.raises(ValueError, match="grad_accum"):
        parse(_cfg(**{"optimizer.grad_accum": 3}))
    with pytest.raises(ValueError, match="prng_impl='philox'"):
        parse(_cfg(prng_impl="philox"))
    with pytest.raises(ValueError, match="model.attention_dropout=0"):
        parse(_cfg(**{"model.attention": "cudnn", "model.dropout": 0.1}))
    with pytest.raises(ValueError, match="model.dtype=bfloat16"):  # the model's own checks run here too
        parse(_cfg(**{"model.attention": "cudnn", "model.attention_dropout": 0.0}))
    parse(_cfg(**{"model.attention": "cudnn", "model.dropout": 0.1, "model.attention_dropout": 0.0,
                                    "model.dtype": "bfloat16"}))
    with pytest.raises(ValueError, match="head_vocab_multiple must be positive"):
        parse(_cfg(**{"model.head_vocab_multiple": 0}))
    with pytest.raises(ValueError, match="unknown model config 'xlmr-huge'"):
        parse(_cfg(**{"model.name": "xlmr-huge"}))


def test_mesh_that_cannot_split_a_parameter_fails_before_compiling_and_keeps_the_saved_config(tmp_path):
    (tmp_path / "config.json").write_text("the earlier run's config")
    with pytest.raises(ValueError, match=r"(?s)\['wi'\]\['kernel'\] \(32, 37\): axis 1 \(logical axis 'mlp'\) of size 37"
                                         r".*mesh\.shape\.tensor"):
        loop.run(parse(_cfg(**{"mesh.shape.data": 2, "mesh.shape.tensor": 4})), tmp_path)  # the tiny MLP is 37 wide
    assert (tmp_path / "config.json").read_text() == "the earlier run's config"
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_cli_rejects_unknown_key_and_wrong_type(tmp_path):
    for flag, needle in (("--config.optimizer.learning_rate=1", "learning_rate"),
                         ("--config.batch_size=abc", "batch_size")):
        r = subprocess.run([sys.executable, "-m", "dlm_jax.train", "--config", "configs/tiny.py", "--workdir",
                            str(tmp_path), flag], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert r.returncode != 0 and needle in r.stderr, r.stderr[-1500:]


def test_task_configs_keep_the_size_of_a_scratch_variant():
    from configs import iwslt14
    large = iwslt14.get_config("large,scratch")
    assert large.model.name == "xlmr-large" and large.model.init == "random"
    assert large.diffusion.label_smoothing == 0.1
    assert iwslt14.get_config("scratch").model.name == "xlmr-base"
    assert iwslt14.get_config("base").model.init == "FacebookAI/xlm-roberta-base"
    with pytest.raises(ValueError, match="unknown size"):
        iwslt14.get_config("huge")


def test_step_flops_count_the_head_at_masked_positions():
    from dlm_jax.model import get_config
    from dlm_jax.training.step import train_flops_per_sequence, train_flops_per_step
    cfg = get_config("xlmr-large")
    h, f, v, n, L = 1024, 4096, 250_002, 24, 512
    fwd_body = 2 * n * (4 * h * h + 2 * h * f) * L + n * 4 * L * L * h
    head = 2 * (h * h + v * h)
    assert train_flops_per_sequence(cfg, L, 0) == 3 * fwd_body
    assert train_flops_per_step(cfg, L, rows=32, predicted=4000) == 3 * (32 * fwd_body + 4000 * head)
