"""A score or a sampled response is a function of (model, example, seed, settings) alone: never of the batch size,
the row's position in its batch, the other rows or the padded width (CPU, float32, bit-identical)."""
import jax
import numpy as np
import pytest

from dlm_jax.diffusion import SamplerConfig
from dlm_jax.diffusion.rows import map_rows, position_uniform, row_keys, stable_hash
from dlm_jax.inference import Generator
from dlm_jax.model import MaskedLM
from dlm_jax.model.configs import get_config

V, BOS, PAD, EOS, MASK = 97, 0, 1, 2, 96


@pytest.fixture(scope="module", autouse=True)
def _production_compiles(full_optimization):
    """Bit-identical results are claimed for production compiles: XLA's optimizations on (tests/conftest.py)."""
    yield


@pytest.fixture(scope="module")
def gen():
    cfg = get_config("bert-tiny", vocab_size=V, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                     max_positions=64, hidden_dropout=0.0, attention_dropout=0.0)
    model = MaskedLM(cfg)
    params = model.init(jax.random.key(0), np.zeros((1, 8), np.int32), attention_mask=np.ones((1, 8)))["params"]
    return Generator(model, params, bos_id=BOS, eos_id=EOS, pad_id=PAD, mask_id=MASK, max_length=64)


def _pairs(n, seed=0, lo=2, hi=20):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(3, 90, rng.integers(lo, hi)).tolist() for _ in range(n)]
    responses = [rng.integers(3, 90, rng.integers(1, 6)).tolist() for _ in range(n)]
    return prompts, responses


def test_scores_are_bit_identical_for_any_batch_order_and_padding(gen):
    prompts, responses = _pairs(8)
    rng = jax.random.key(3)
    ref, ref_se = gen.score(prompts, responses, rng, num_samples=5, batch_size=8)
    assert np.isfinite(ref).all() and (ref_se > 0).all()
    for bs in (1, 3):
        got, se = gen.score(prompts, responses, rng, num_samples=5, batch_size=bs)
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(se, ref_se)
    order = np.random.default_rng(1).permutation(8)
    got, _ = gen.score([prompts[i] for i in order], [responses[i] for i in order], rng, num_samples=5, batch_size=3)
    np.testing.assert_array_equal(got, ref[order])
    long_p, long_r = _pairs(4, seed=7, lo=40, hi=50)  # other rows that would widen a shared batch
    got, _ = gen.score(prompts[:3] + long_p, responses[:3] + long_r, rng, num_samples=5, batch_size=8)
    np.testing.assert_array_equal(got[:3], ref[:3])
    other, _ = gen.score(prompts, responses, jax.random.key(4), num_samples=5)
    assert not np.array_equal(other, ref)  # the seed does matter


def test_rank_choice_does_not_depend_on_the_batch(gen):
    prompts, _ = _pairs(6, seed=2)
    options = [[[5, 6], [7], [8, 9, 10]]] * 6
    picks = [gen.rank_options(prompts, options, jax.random.key(0), num_samples=3, batch_size=bs) for bs in (1, 4, 18)]
    np.testing.assert_array_equal(picks[0], picks[1])
    np.testing.assert_array_equal(picks[0], picks[2])


@pytest.mark.parametrize("config", [
    SamplerConfig(steps=4),
    SamplerConfig(steps=4, strategy="reparam-cond-stochastic1.0-linear", argmax=False, temperature=1.5),
    SamplerConfig(steps=4, strategy="cmlm", argmax=False),
    SamplerConfig(steps=6, strategy="adaptive", threshold=0.5, argmax=False),
], ids=["argmax", "reparam-sampled", "cmlm-sampled", "adaptive-sampled"])
def test_a_rows_sample_never_depends_on_the_other_rows(gen, config):
    prompts, _ = _pairs(7, seed=5)
    lengths = [3, 5, 2, 6, 4, 3, 5]
    rng = jax.random.key(11)
    ref = gen.generate(prompts, lengths, config, rng, batch_size=8)
    for bs in (1, 3):
        got = gen.generate(prompts, lengths, config, rng, batch_size=bs)
        np.testing.assert_array_equal(got["tokens"], ref["tokens"])
        np.testing.assert_array_equal(got["scores"], ref["scores"])
        np.testing.assert_array_equal(got["num_evals"], ref["num_evals"])
    order = [6, 2, 0, 4, 1, 3, 5]
    got = gen.generate([prompts[i] for i in order], [lengths[i] for i in order], config, rng, batch_size=3)
    np.testing.assert_array_equal(got["tokens"], ref["tokens"][order])
    long_p, _ = _pairs(2, seed=9, lo=40, hi=45)
    got = gen.generate(prompts[:2] + long_p, lengths[:2] + [7, 7], config, rng, batch_size=4)
    np.testing.assert_array_equal(got["tokens"][:2], ref["tokens"][:2])


def test_sampled_rows_differ_by_seed_and_equal_prompts_can_draw_apart(gen):
    config = SamplerConfig(steps=3, argmax=False, temperature=3.0)
    p = [[5, 6, 7]] * 4
    same = gen.generate(p, [6] * 4, config, jax.random.key(0))
    assert all(np.array_equal(same["tokens"][0], t) for t in same["tokens"])  # default seed: the content
    apart = gen.generate(p, [6] * 4, config, jax.random.key(0), seeds=[0, 1, 2, 3])
    assert len({tuple(t) for t in apart["tokens"]}) > 1


def test_row_helpers_draw_per_row_and_position():
    keys = row_keys(jax.random.key(0), [stable_hash([1, 2]), stable_hash([3])])
    assert stable_hash([1, 2]) == stable_hash([1, 2]) != stable_hash([1, 2], 0) != stable_hash([2, 1])
    wide, narrow = position_uniform(keys, 12), position_uniform(keys[1:], 5)
    np.testing.assert_array_equal(np.asarray(wide)[1, :5], np.asarray(narrow)[0])
    x = jax.numpy.arange(10.0)[:, None] * jax.numpy.ones((10, 3))
    np.testing.assert_array_equal(map_rows(lambda a: a * 2, (x,), 4), x * 2)
    np.testing.assert_array_equal(map_rows(lambda a: a.sum(1), (x,), 0), x.sum(1))


@pytest.mark.slow
def test_evaluate_a_multiple_choice_task_gives_the_same_numbers_at_batch_1_and_16(tmp_path, monkeypatch,
                                                                                   bert_vocab, tiny_trained):
    from test_paper_eval import write_released

    from dlm_jax.data import registry, sources
    from dlm_jax.data.prepare import prepare_diffusionllm_instruct
    from dlm_jax.inference import EvalRequest, Evaluator, restore_run
    src = write_released(tmp_path / "clone")
    monkeypatch.setenv("DLM_DATA_DIR", str(tmp_path / "data"))
    prepare_diffusionllm_instruct(src, tmp_path / "data" / sources.PAPER_DIR)
    registry.register_all(bert_vocab)
    run = restore_run(tiny_trained)
    ev = Evaluator(run.generator(), run.vocab, run.run.sampler, run.feature_spec())
    results = [ev.run_task("paper:mmlu:0shot", EvalRequest(batch_size=bs, rank_samples=4)) for bs in (1, 16)]
    assert "rank_accuracy" in results[0]["metrics"]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert [e["prediction"] for e in results[0]["examples"]] == [e["prediction"] for e in results[1]["examples"]]
