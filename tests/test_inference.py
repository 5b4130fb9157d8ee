"""The inference Generator: likelihood scoring and rank classification with a model whose preferences are known."""
import jax
import jax.numpy as jnp
import numpy as np

from dlm_jax.inference import Generator

V, BOS, EOS, PAD, MASK, LIKED = 12, 0, 2, 1, 11, 7


class PrefersOneToken:
    """Every position strongly predicts LIKED (and EOS almost as much), whatever the input."""

    def apply(self, variables, tokens, attention_mask=None, output_positions=None):
        shape = tokens.shape if output_positions is None else output_positions.shape
        return jnp.zeros(shape + (V,)).at[..., LIKED].set(6.0).at[..., EOS].set(5.0)


def _gen():
    return Generator(PrefersOneToken(), {}, bos_id=BOS, eos_id=EOS, pad_id=PAD, mask_id=MASK, max_length=16)


def test_score_is_lower_for_the_preferred_response_and_batches_agree():
    gen = _gen()
    prompts = [[3, 4], [3, 4], [5]]
    nll, se = gen.score(prompts, [[LIKED, LIKED], [4, 9], [LIKED]], jax.random.key(0), num_samples=16)
    assert nll.shape == se.shape == (3,) and (se >= 0).all()
    assert nll[0] < nll[1] and nll[2] < nll[1]
    again, _ = gen.score(prompts, [[LIKED, LIKED], [4, 9], [LIKED]], jax.random.key(0), num_samples=16,
                         batch_size=2)  # other batching, other padding: still finite and ordered
    assert np.isfinite(again).all() and again[0] < again[1]


def test_rank_options_picks_the_likeliest_option():
    gen = _gen()
    picks = gen.rank_options([[3], [4, 5], [6]], [[[4], [LIKED]], [[LIKED], [9], [3]], [[8], [9], [LIKED]]],
                             jax.random.key(1), num_samples=8)
    np.testing.assert_array_equal(picks, [1, 0, 2])


def test_fixed_eos_canvas_keeps_the_final_eos_and_generates_the_rest():
    from dlm_jax.diffusion import SamplerConfig
    gen = _gen()
    prompts, lengths = [[3, 4], [5]], [4, 3]  # response lengths incl. </s>
    fixed = gen.generate(prompts, lengths, SamplerConfig(steps=3, fixed_eos=True), jax.random.key(0))
    free = gen.generate(prompts, lengths, SamplerConfig(steps=3), jax.random.key(0))
    for i, (p, n) in enumerate(zip(prompts, lengths)):
        last = 1 + len(p) + n - 1
        assert fixed["tokens"][i, last] == EOS and not fixed["response_mask"][i, last]
        assert fixed["response_mask"][i].sum() == n - 1 and free["response_mask"][i].sum() == n
        assert (fixed["tokens"][i][fixed["response_mask"][i]] == LIKED).all()  # the model's favourite, not </s>


class CountsMasksToTheLeft:
    """Position i predicts 3 + (the number of <mask> tokens left of i) % 8, confidently, whatever else."""

    def apply(self, variables, tokens, attention_mask=None, output_positions=None):
        left = jnp.cumsum(tokens == MASK, axis=1) - (tokens == MASK)
        if output_positions is not None:
            left = jnp.take_along_axis(left, output_positions, 1)
        return jax.nn.one_hot(3 + left % 8, V) * 10.0


def test_block_decoding_unmasks_block_by_block_with_later_blocks_masked():
    """`block_length` B (LLaDA's semi-AR decoding): in one step per block, block k's positions see no mask to
    the left but their own block's, so response position r gets 3 + r % B (3 + r when decoded at once); every
    block's frames keep the later blocks masked; each row takes every block's steps; B >= the response is the
    whole response at once, bit for bit, sampled strategies included."""
    from dlm_jax.diffusion import SamplerConfig
    gen = Generator(CountsMasksToTheLeft(), {}, bos_id=BOS, eos_id=EOS, pad_id=PAD, mask_id=MASK, max_length=16)
    prompts, lengths = [[3, 4], [5]], [7, 4]
    one = SamplerConfig(steps=1, record_trajectory=True)
    whole = gen.generate(prompts, lengths, one, jax.random.key(0))
    blocks = gen.generate(prompts, lengths, SamplerConfig(steps=1, record_trajectory=True, block_length=3),
                          jax.random.key(0))
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(whole["tokens"][i][whole["response_mask"][i]], 3 + np.arange(n))
        np.testing.assert_array_equal(blocks["tokens"][i][blocks["response_mask"][i]], 3 + np.arange(n) % 3)
    assert blocks["trajectory"].shape[0] == 3 and list(blocks["num_evals"]) == [3, 3]
    start = 1 + len(prompts[0])
    for k, frame in enumerate(blocks["trajectory"][:, 0]):  # row 0: blocks at response ranks 0-2, 3-5, 6
        resp = frame[start:start + 7]
        assert (resp[:3 * (k + 1)] != MASK).all() and (resp[3 * (k + 1):] == MASK).all()
    for strategy in ("cmlm", "reparam-uncond-stochastic1.0-cosine"):
        cfg = SamplerConfig(steps=3, strategy=strategy, argmax=False)
        a = gen.generate(prompts, lengths, cfg, jax.random.key(1))
        b = gen.generate(prompts, lengths, SamplerConfig(steps=3, strategy=strategy, argmax=False, block_length=7),
                         jax.random.key(1))
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        np.testing.assert_array_equal(a["scores"], b["scores"])
