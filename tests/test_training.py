"""Training: falling loss, resume == uninterrupted, SIGTERM, sharded step == single-device step, config errors."""
import json
import os
import shutil
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
from conftest import set_dotted, tiny_rdm_batch

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
    return tiny_rdm_batch(b, length, vocab, seed)


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
    return set_dotted(c, kw)


def _losses(workdir):
    rows = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.slow
@pytest.mark.parametrize("data", [{"data.pack": False}, {"data.pack": True},
                                  {"data.cache": False, "data.stream": "indexed", "model.prune_vocab": False}])
def test_resume_gives_the_same_run(tmp_path, data):
    """A run killed after its step-3 checkpoint, with steps 4-6 logged but their checkpoint lost (the full run's
    directory without checkpoint 6, as a kill leaves it), resumed by the same command, ends with the uninterrupted
    run's params and logs every step once."""
    full = tmp_path / "full"
    loop.run(parse(_cfg(**data)), full)
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "6")
    assert restore_run(part).step == 3
    loop.run(parse(_cfg(**data)), part)  # the same command again resumes at step 3
    # every step is logged once, the first (compiling) step of each run included: no hole, no repeat
    a, b = _losses(full), _losses(part)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]
    steps = [json.loads(l)["step"] for l in (part / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    common = sorted(a)
    np.testing.assert_allclose([a[k] for k in common], [b[k] for k in common], rtol=1e-6)
    pa, pb = restore_run(full).params, restore_run(part).params
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # a half-written checkpoint directory (as a crash leaves it) is ignored
    (part / "checkpoints" / "9.orbax-checkpoint-tmp-123").mkdir()
    assert restore_run(part).step == 6


@pytest.mark.slow
def test_sigterm_saves_and_exits_zero(tmp_path):
    """A preempted run (SIGTERM) saves a checkpoint at the step it stopped and exits 0. Ctrl-C (SIGINT, the same
    handler) is checked in test_multiprocess.py, where every process of a launch gets it."""
    sig = signal.SIGTERM
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "dlm_jax.train", "--config", "configs/tiny.py", "--workdir",
                             str(tmp_path), "--config.num_train_steps=100000", "--config.log_every_steps=1",
                             "--config.checkpoint_every_steps=100000"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "metrics.jsonl").exists():
        time.sleep(0.5)
    assert (tmp_path / "metrics.jsonl").exists(), proc.stderr.read().decode()[-2000:] if proc.poll() else "timeout"
    proc.send_signal(sig)
    rc = proc.wait(120)
    err = proc.stderr.read().decode()
    assert rc == 0, err[-2000:]
    steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert steps and max(steps) >= 1
    assert "Traceback" not in err and "rerun the same command to resume" in err
    assert f"checkpoint saved at step {max(steps)}" in err


def test_a_doubled_ctrl_c_is_one_request_and_a_later_one_forces_the_exit(monkeypatch):
    """A terminal's Ctrl-C reaches a launcher's children twice (directly and forwarded): one stop request. A second
    Ctrl-C after FORCE_AFTER_S exits at once."""
    from dlm_jax.training.hooks import Preemption
    old_int, old_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    try:
        p = Preemption()
        p._handle(signal.SIGINT, None)
        p._handle(signal.SIGINT, None)  # the same keypress, forwarded
        assert p.signalled and p.sync() and exits == []
        p._first -= Preemption.FORCE_AFTER_S + 1
        p._handle(signal.SIGINT, None)
        assert exits == [130]
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def test_a_resume_that_changes_the_computation_is_refused_and_changes_are_recorded(tiny_trained, tmp_path):
    import json
    import shutil

    from dlm_jax.errors import ConfigError
    from dlm_jax.rundir import RunDir
    wd = tmp_path / "run"
    shutil.copytree(tiny_trained, wd)
    rundir = RunDir(wd)
    c = rundir.read_config()
    c.batch_size, c.optimizer.lr, c.num_train_steps = 16, 5e-4, 50
    with pytest.raises(ConfigError) as e:
        rundir.check_resume(parse(c))
    msg = str(e.value)
    assert "batch_size: 8 -> 16" in msg and "optimizer.lr: 0.001 -> 0.0005" in msg and "num_train_steps" not in msg
    assert "allow_config_change=True" in msg and not (wd / "config_history.jsonl").exists()
    c.allow_config_change = True
    changes = rundir.check_resume(parse(c))
    assert set(changes) == {"batch_size", "optimizer.lr", "num_train_steps"}
    (line,) = (wd / "config_history.jsonl").read_text().splitlines()
    assert json.loads(line)["changes"]["batch_size"] == [8, 16]
    c2 = rundir.read_config()
    c2.num_train_steps = 50  # more steps: allowed, recorded
    assert rundir.check_resume(parse(c2)) == {"num_train_steps": (8, 50)}


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
    # ModernBERT-base: GeGLU (3 h f per layer) and, on 2 of every 3 layers, a band of 129 keys per query
    mb = get_config("modernbert-base")
    h, f, n, L = 768, 1152, 22, 1024
    global_layers = len(range(0, n, 3))
    attn = 4 * L * h * (global_layers * L + (n - global_layers) * 129)
    assert train_flops_per_sequence(mb, L, 0) == 3 * (2 * n * (4 * h * h + 3 * h * f) * L + attn)


def _kernel_params(cfg) -> int:
    """Parameters in the matmul kernels of an initialised model of `cfg` (shapes only; no embeddings, norms or
    biases: q/k/v biases are [heads, head_dim], so dimensions alone would not tell them apart)."""
    import jax
    import jax.numpy as jnp
    from dlm_jax.model import model_for
    params = jax.eval_shape(lambda: model_for(cfg).init(jax.random.key(0), jnp.ones((1, 8), jnp.int32))["params"])
    return sum(int(x.size) for path, x in jax.tree_util.tree_leaves_with_path(params)
               if "kernel" in jax.tree_util.keystr(path))


def test_step_flops_of_a_decoder_llm_count_gqa_swiglu_and_a_head_without_transform():
    """The body's matmul parameters in the FLOP count equal the 2-D kernels of an initialised tiny Llama (grouped-
    query attention, a head size override, SwiGLU), and Qwen2.5-0.5B's count gives its published 494M parameters
    (body + the tied 151,936 x 896 table)."""
    from dlm_jax.model import get_config
    from dlm_jax.training.step import body_matmul_params, train_flops_per_sequence
    cfg = get_config("tiny-test").replace(family="llama", vocab_size=50, tie_embeddings=True, pad_token_id=0,
                                          num_heads=4, num_kv_heads=2, head_size=12, hidden_size=32)
    kernels = _kernel_params(cfg)
    assert kernels == body_matmul_params(cfg)
    L = 16
    attn = cfg.num_layers * 4 * L * L * 4 * 12
    assert train_flops_per_sequence(cfg, L, 1) == 3 * (2 * kernels * L + attn + 2 * 50 * 32)
    qwen = get_config("qwen2.5-0.5b")
    total = body_matmul_params(qwen) + qwen.vocab_size * qwen.hidden_size
    assert round(total / 1e6) == 494  # without the norms and q/k/v biases (0.4M)


def test_step_flops_of_the_encoder_decoder_count_both_stacks_and_cross_attention():
    """The encoder-decoder's count: its body parameters equal the 2-D kernels of an initialised tiny model (2
    encoder, 3 decoder layers with cross-attention), attention has one product per encoder layer and two per decoder
    layer over the whole row, and the head is the output product only (no MLM transform)."""
    from dlm_jax.model import get_config
    from dlm_jax.training.step import body_matmul_params, train_flops_per_sequence
    cfg = get_config("transformer-tiny-test")
    kernels = _kernel_params(cfg)
    assert kernels == body_matmul_params(cfg) == 2 * (4 * 32 * 32 + 2 * 32 * 37) + 3 * (8 * 32 * 32 + 2 * 32 * 37)
    L = 16
    attn = (2 + 2 * 3) * 4 * L * L * 32
    assert train_flops_per_sequence(cfg, L, 1) == 3 * (2 * kernels * L + attn + 2 * 99 * 32)


def test_released_schedule_is_log_warmup_then_constant():
    """scripts/ds_config_zero2.json's WarmupLR (log warm-up over ceil(1% of the steps), then constant) wins over
    the scripts' --lr_scheduler_type inverse_sqrt."""
    c = _cfg(num_train_steps=1000)
    c.optimizer.schedule, c.optimizer.warmup_ratio, c.optimizer.lr = "log_warmup_constant", 0.01, 5e-5
    opt = parse(c).optimizer
    assert opt.warmup_steps == 10
    _, sched = build_optimizer(opt, 1000)
    import math
    for step, want in [(0, 0.0), (1, 5e-5 * math.log(2) / math.log(10)), (4, 5e-5 * math.log(5) / math.log(10)),
                       (9, 5e-5), (10, 5e-5), (999, 5e-5)]:
        np.testing.assert_allclose(float(sched(step)), want, rtol=1e-6, atol=1e-12)


def test_paper_configs_use_the_released_recipe():
    from configs import flan2022, iwslt14
    for arg in ("base", "xxl"):
        run = parse(iwslt14.get_config(arg), num_devices=4, num_processes=1)  # 500 sequences a step
        o, d = run.optimizer, run.diffusion
        assert (o.schedule, o.eps, o.b1, o.b2, o.weight_decay, o.clip_norm) == ("log_warmup_constant", 1e-8, 0.9,
                                                                                0.98, 0.01, 1.0)
        assert o.warmup_steps == {"base": 1500, "xxl": 300}[arg]  # ceil(1% of 150k / 30k steps)
        assert d.coupled and d.loss_scale == 50.0 and d.smoothing_weighting == "constant"
        assert run.model.prune_vocab
    scratch = parse(iwslt14.get_config("base,scratch"), num_devices=4, num_processes=1)
    assert scratch.diffusion.label_smoothing == 0.1
    flan = parse(flan2022.get_config("base"), num_devices=8, num_processes=1)
    assert flan.data.overlong == "truncate_prompt" and not flan.model.prune_vocab and flan.optimizer.lr == 1e-5


def test_flan_left_truncation_keeps_the_target_whole():
    from configs import flan2022
    from dlm_jax.data import features
    run = parse(flan2022.get_config("base"), num_devices=8, num_processes=1)
    spec = features.FeatureSpec(max_length=run.data.max_length, bos_id=0, eos_id=2, pad_id=1,
                                overlong=run.data.overlong)
    prompt, target = list(range(10, 610)), list(range(700, 800))  # 600 + 100 tokens: 190 of the prompt go
    row = features.layout(prompt, target, spec)
    n = int(row["padding_mask"].sum())
    assert n == 512 and list(row["tokens"][row["response_mask"]]) == target + [2]
    assert list(row["tokens"][1:411]) == prompt[-410:]  # <s>, the last 410 prompt tokens, the target, </s>


def test_length_head_is_the_released_structure_and_the_backbone_gets_no_gradient():
    from dlm_jax.model.length import LengthPredictor, length_loss
    from dlm_jax.training.step import length_loss_fn
    mcfg = get_config("tiny-test", vocab_size=50, hidden_size=32, num_heads=4, intermediate_size=48,
                      max_positions=40)
    head = LengthPredictor.for_backbone(mcfg)
    params = head.init_params(jax.random.key(0))
    assert params["dense"]["kernel"].shape == (32, 48) and params["out"]["kernel"].shape == (48, 40)
    assert params["layer"]["mlp"]["wi"]["kernel"].shape == (32, 48)
    h = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 32)), jnp.float32)
    mask = jnp.ones((2, 5), jnp.int32)
    logits = head.apply({"params": params}, h, mask)
    assert logits.shape == (2, 40) and np.isfinite(np.asarray(logits)).all()
    model = MaskedLM(mcfg)
    batch = _tiny_batch(b=4, vocab=50)
    batch = {**jax.tree.map(jnp.asarray, batch), "prompt_length": jnp.full((4,), 5), "response_length": jnp.full((4,), 5)}
    backbone = model.init(jax.random.key(1), batch["tokens"])["params"]
    loss_fn = length_loss_fn(model, head)
    g_backbone = jax.grad(lambda fb: loss_fn(params, fb, batch, jax.random.key(2))[0])(backbone)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_backbone))
    g_head = jax.grad(lambda p: loss_fn(p, backbone, batch, jax.random.key(2))[0])(params)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(g_head))
    assert float(length_loss(logits, jnp.asarray([3, 4]))[0]) > 0


def test_pruned_vocabulary_counts_every_id_of_the_shard():
    from dlm_jax.training.setup import token_counts
    tokens = np.array([[5, 5, 7, 1], [9, 1, 1, 1]])
    np.testing.assert_array_equal(token_counts(tokens, 12), [0, 4, 0, 0, 0, 2, 0, 1, 0, 1, 0, 0])


@pytest.mark.slow
def test_periodic_evaluation_runs_the_configured_tasks_through_the_evaluator(tmp_path):
    wd = tmp_path / "run"
    # two tasks, each with its own protocol (ding_de_en: 50 steps, oracle length), logged per task
    cfg = _cfg(num_train_steps=2, eval_every_steps=2, **{"data.eval_tasks": "ding_de_en,ding_de_en_prompt",
                                                         "data.eval_examples": 3})
    loop.run(parse(cfg), wd)
    rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    assert len(evals) == 1 and evals[0]["step"] == 2
    assert {"eval/ding_de_en/bleu", "eval/ding_de_en/bleu_cased", "eval/ding_de_en_prompt/bleu"} <= set(evals[0])
    # the default: the training task on data.eval_split, as "eval_<metric>"
    loop.run(parse(_cfg(num_train_steps=2, eval_every_steps=2, **{"data.eval_examples": 3})), tmp_path / "b")
    rows = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_bleu" in r for r in rows)


def test_the_prng_implementation_is_the_runs_and_not_set_for_the_process(tmp_path):
    """`prng_impl` picks the generator of the run's init and step keys; the process's default is left alone (it
    was set globally inside loop.run, so anything after a training in the same process drew differently)."""
    import jax
    before = jax.config.jax_default_prng_impl
    losses = {}
    for impl in ("unsafe_rbg", "threefry2x32"):
        loop.run(parse(_cfg(prng_impl=impl, num_train_steps=2, checkpoint_every_steps=2)), tmp_path / impl)
        assert jax.config.jax_default_prng_impl == before
        losses[impl] = _losses(tmp_path / impl)
    assert losses["unsafe_rbg"] != losses["threefry2x32"]  # the step's noise really came from the other generator
