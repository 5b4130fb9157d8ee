"""Meshes, logical rules and sharded execution on 8 simulated CPU devices."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from dlm_jax import hf_io, parallel
from dlm_jax.model import MaskedLM, get_config
from dlm_jax.model.axes import DEFAULT_RULES
from dlm_jax.parallel import make_mesh, resolve_mesh_shape, sharded_init

MESH = {"data": 2, "fsdp": 2, "tensor": 2}


def test_resolve_mesh_shape():
    assert resolve_mesh_shape({"data": -1, "tensor": 2}, 8) == {"data": 4, "fsdp": 1, "tensor": 2}
    with pytest.raises(ValueError, match="not divisible"):
        resolve_mesh_shape({"data": -1, "tensor": 3}, 8)
    with pytest.raises(ValueError, match="needs 12 devices"):
        resolve_mesh_shape({"data": 3, "fsdp": 4}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        resolve_mesh_shape({"model": 2}, 8)


@pytest.mark.parametrize("scan", [False, True])
def test_sharded_init_specs_and_forward_equals_single_device(scan):
    assert jax.device_count() == 8, "conftest sets 8 simulated CPU devices"
    cfg = get_config("tiny-test", hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=96,
                     scan_layers=scan, hidden_dropout=0.0)
    model = MaskedLM(cfg)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 96, (4, 12)))
    mask = jnp.ones_like(ids).at[1, 8:].set(0)
    mesh = make_mesh(MESH)
    params, shardings = sharded_init(lambda k: model.init(k, ids)["params"], mesh, DEFAULT_RULES,
                                     jax.random.key(0))
    lyr = (None,) if scan else ()
    pre = "layers" if scan else "layers_0"
    expect = {
        ("word", "embedding"): P("tensor", "fsdp"),
        ("position", "embedding"): P(None, "fsdp"),
        (pre, "attention", "query", "kernel"): P(*lyr, "fsdp", "tensor", None),
        (pre, "attention", "out", "kernel"): P(*lyr, "tensor", None, "fsdp"),
        (pre, "mlp", "wi", "kernel"): P(*lyr, "fsdp", "tensor"),
        (pre, "mlp", "wo", "kernel"): P(*lyr, "tensor", "fsdp"),
        (pre, "mlp_ln", "scale"): P(*lyr, None),
        ("head_bias",): P("tensor"),
    }
    flat = {k: v for k, v in __import__("flax").traverse_util.flatten_dict(params).items()}
    for path, spec in expect.items():
        got = flat[path].sharding.spec
        assert tuple(got) + (None,) * (len(spec) - len(got)) == tuple(spec), (path, got, spec)
    single = jax.device_get(params)
    ref = model.apply({"params": single}, ids, attention_mask=mask)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        out = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m))(params, ids, mask)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)


def test_load_into_mesh_places_each_array(tmp_path):
    cfg = get_config("tiny-test", vocab_size=96, hidden_size=32, intermediate_size=64)
    params = MaskedLM(cfg).init(jax.random.key(1), jnp.ones((1, 4), jnp.int32))["params"]
    hf_io.save_hf(params, cfg, tmp_path)
    mesh = make_mesh(MESH)
    loaded = hf_io.load_params(tmp_path, cfg, mesh=mesh)
    assert loaded["word"]["embedding"].sharding.spec == P("tensor", "fsdp")
    for a, b in zip(jax.tree.leaves(nn.unbox(params)), jax.tree.leaves(loaded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_optimizer_state_is_sharded_like_the_params(tmp_path):
    """FSDP shards Adam's moments with their parameters (jit(tx.init) alone would put them on one device)."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from configs import tiny
    from dlm_jax.config import parse
    from dlm_jax.training.setup import setup
    c = tiny.get_config()
    c.mesh.shape.data, c.mesh.shape.fsdp = 1, -1
    c.data.train_limit = 64
    s = setup(parse(c))
    params, adam = s.state["params"], s.state["opt_state"][1][0]
    flat_p = jax.tree_util.tree_leaves_with_path(params)
    flat_mu = dict(jax.tree_util.tree_leaves_with_path(adam.mu))
    sharded = 0
    for path, p in flat_p:
        mu = flat_mu[path]
        assert mu.sharding.spec == p.sharding.spec and len(mu.sharding.device_set) == 8, path
        sharded += "fsdp" in str(p.sharding.spec)
    assert sharded > 0
    assert adam.count.sharding.spec == P() and len(adam.count.sharding.device_set) == 8


def test_activation_constraints_are_applied():
    """`mesh_rules` makes flax's logical constraints real (with `with mesh:` they silently did nothing)."""
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    f = lambda x: nn.with_logical_constraint(x * 2, ("batch", None))  # noqa: E731
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        text = jax.jit(f).lower(jnp.ones((16, 4))).as_text()
    assert "sharding_constraint" in text or "mhlo.sharding" in text


def test_head_is_vocab_parallel_and_matches_single_device():
    """On an FSDP x tensor mesh the head's logits are split along the vocabulary (no device holds the whole tied
    table's product), the positions are gathered, and the result is the single-device one."""
    cfg = get_config("tiny-test", hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=98,  # 98 % 4: uneven
                     hidden_dropout=0.0)
    model = MaskedLM(cfg)
    ids = jnp.asarray(np.random.default_rng(1).integers(3, 97, (4, 12)))
    pos = jnp.asarray([[0, 5, 13, 20], [3, 3, 9, 23]])  # 2 pooled groups of 2 rows: 8 positions <= 98 rows
    mesh = make_mesh(MESH)
    params, _ = sharded_init(lambda k: model.init(k, ids)["params"], mesh, DEFAULT_RULES, jax.random.key(0))
    ref = model.apply({"params": jax.device_get(params)}, ids, output_positions=pos)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        out = jax.jit(lambda p, i, q: model.apply({"params": p}, i, output_positions=q))(params, ids, pos)
    spec = tuple(out.sharding.spec) + (None,) * 3
    assert spec[0] == "data" and "fsdp" in str(spec[2]), out.sharding.spec  # positions gathered, vocab split
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=2e-5)


def test_padded_head_product_matches_unpadded_sharded_and_not():
    """`model.head_vocab_multiple` pads the tied table inside the product only: same parameters, same logits and
    gradients, on one device and vocab-parallel on the 8-device mesh (98 rows padded to 128)."""
    cfg = get_config("tiny-test", hidden_size=32, num_heads=4, intermediate_size=64, vocab_size=98,
                     hidden_dropout=0.0)
    padded = cfg.replace(head_vocab_multiple=64)
    ids = jnp.asarray(np.random.default_rng(2).integers(3, 97, (4, 12)))
    pos = jnp.asarray([[0, 5, 13, 20], [3, 3, 9, 23]])
    mesh = make_mesh(MESH)
    params, _ = sharded_init(lambda k: MaskedLM(cfg).init(k, ids)["params"], mesh, DEFAULT_RULES, jax.random.key(0))
    host = jax.device_get(params)

    def loss(c):
        return lambda p: (MaskedLM(c).apply({"params": p}, ids, output_positions=pos) ** 2).mean()
    ref, g_ref = jax.value_and_grad(loss(cfg))(host)
    assert MaskedLM(padded).apply({"params": host}, ids, output_positions=pos).shape == (2, 4, 98)
    val, grads = jax.value_and_grad(loss(padded))(host)
    np.testing.assert_allclose(val, ref, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, g_ref)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        val_s, grads_s = jax.jit(jax.value_and_grad(loss(padded)))(params)
    np.testing.assert_allclose(val_s, ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, atol=2e-5), grads_s, g_ref)
    with pytest.raises(ValueError, match="head_vocab_multiple"):
        cfg.replace(head_vocab_multiple=0)


def test_uneven_split_names_the_array_the_axis_and_the_fix():
    mesh = parallel.make_mesh({"data": 2, "fsdp": 1, "tensor": 4})
    cfg = get_config("tiny-test", vocab_size=50, hidden_size=32, num_heads=4, intermediate_size=64)
    abstract = jax.eval_shape(lambda: MaskedLM(cfg).init(jax.random.key(0), jnp.ones((2, 8), jnp.int32))["params"])
    with pytest.raises(ValueError) as e:
        parallel.logical_to_shardings(abstract, mesh)
    msg = str(e.value)
    assert "['word']['embedding'] (50, 32): axis 0 (logical axis 'vocab') of size 50" in msg
    assert "4 devices" in msg and "largest split under 4 that does: 2" in msg and "mesh.shape.tensor" in msg
    assert "mlp" not in msg  # 64 splits evenly
    even = get_config("tiny-test", vocab_size=48, hidden_size=32, num_heads=4, intermediate_size=64)
    abstract = jax.eval_shape(lambda: MaskedLM(even).init(jax.random.key(0), jnp.ones((2, 8), jnp.int32))["params"])
    shardings = parallel.logical_to_shardings(abstract, mesh)
    assert nn.unbox(shardings)["word"]["embedding"].spec[0] == "tensor"


@pytest.mark.parametrize("devices", [1, 8])
def test_the_train_step_compiles_once_whatever_the_mesh_size(devices):
    """A fresh state's scalars (step counters) are placed on the mesh like the step's outputs: on a 1-device mesh
    they were not, so the second step compiled the whole step again (and the logged tokens/s counted it)."""
    from jax.sharding import NamedSharding
    mesh = make_mesh({"data": -1}, devices=jax.devices()[:devices])
    w = jax.device_put(jnp.ones((8, 3)), NamedSharding(mesh, P()))
    state = parallel.replicate_unplaced({"step": jnp.zeros((), jnp.int32), "w": w}, mesh)
    assert all(isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh for x in jax.tree.leaves(state))

    def step(st, batch, frozen):
        return {"step": st["step"] + 1, "w": st["w"] * batch["x"].mean()}, {"loss": st["w"].sum()}

    jitted = parallel.jit_train_step(step, state, mesh)
    batch = parallel.global_batch({"x": np.ones((8, 2), np.float32)}, mesh)
    with parallel.mesh_rules(mesh, DEFAULT_RULES):
        for _ in range(3):
            state, _ = jitted(state, batch, None)
    assert int(state["step"]) == 3 and jitted._cache_size() == 1
