"""Table 1's baselines end to end through the one trainer and the one inference path: the encoder-decoder
Transformer (AR with beam search, and RDM with the sampler, the ELBO and a length predictor) and the decoder-only
AR model with KV-cache decoding; their configs; the paper's numbers beside them."""
import jax
import numpy as np
import pytest

from dlm_jax.config import parse
from dlm_jax.diffusion import DecodeConfig, SamplerConfig
from dlm_jax.errors import ConfigError
from dlm_jax.inference import restore_run
from dlm_jax.inference.evaluator import EvalRequest, Evaluator, paper_model, table_rows
from dlm_jax.training import loop


def _tiny(name="transformer-tiny-test", objective="ar", **kw):
    from configs import tiny
    c = tiny.get_config()
    c.model.name, c.objective, c.model.causal = name, objective, objective == "ar"
    c.num_train_steps, c.checkpoint_every_steps = 6, 6
    c.model.overrides.update(max_positions=64)
    c.data.train_limit = 64
    for k, v in kw.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def encdec_ar(tmp_path_factory):
    wd = tmp_path_factory.mktemp("encdec_ar") / "run"
    metrics = loop.run(parse(_tiny()), wd)
    assert np.isfinite(metrics["loss"])
    return wd


def test_encoder_decoder_ar_trains_decodes_with_beam_and_evaluates(encdec_ar):
    run = restore_run(encdec_ar)
    assert run.model.cfg.family == "transformer" and run.feature_spec().separator
    gen = run.generator()
    assert gen.decoding == DecodeConfig()  # beam 5 by default
    prompts = [list(run.vocab.encode("das haus ist klein")), list(run.vocab.encode("guten morgen"))]
    out = gen.generate(prompts, [0, 0], run.run.sampler, jax.random.key(0))
    eos = run.vocab.eos_id
    for r, p in enumerate(prompts):  # <s> prompt </s> response ending in </s>
        assert out["tokens"][r, 1 + len(p)] == eos
        resp = out["tokens"][r][out["response_mask"][r]]
        assert len(resp) >= 1 and resp[-1] == eos and eos not in resp[:-1]
    alone = gen.generate(prompts[1:], [0], run.run.sampler, jax.random.key(0))
    np.testing.assert_array_equal(alone["tokens"][0], out["tokens"][1])  # decoded alone or beside another row
    nll, se = gen.score(prompts, [[5, 6], [7]], jax.random.key(1))
    assert np.isfinite(nll).all() and (nll > 0).all() and (se == 0).all()  # exact log-likelihood
    evaluator = Evaluator(gen, run.vocab, run.run.sampler, run.feature_spec())
    result = evaluator.run_task("ding_de_en", EvalRequest(split="validation", limit=4))
    assert result["length"] == "ar-beam5" and result["decoding"]["beam_size"] == 5
    assert "bleu" in result["metrics"]


def test_greedy_is_beam_1_through_the_generator(encdec_ar):
    run = restore_run(encdec_ar)
    gen = run.generator()
    prompts = [list(run.vocab.encode(s)) for s in ("ein kleines haus", "ja", "wir gehen heute nach hause")]
    gen.decoding = DecodeConfig(beam_size=1)
    greedy = gen.generate(prompts, [0] * 3, run.run.sampler, jax.random.key(0))
    width, vmap = run.max_length, run.vocab_map
    eos = int(vmap.to_new(np.asarray(run.vocab.eos_id)))
    full = jax.jit(lambda ids, m: run.model.apply({"params": run.params}, ids, attention_mask=m))
    for r, p in enumerate(prompts):  # greedy by full recomputation of the whole row each token (one shape)
        seq = list(vmap.to_new(np.asarray([run.vocab.bos_id, *p, run.vocab.eos_id])))
        start, limit = len(seq), width - len(seq)
        for i in range(limit):
            ids = np.full((1, width), vmap.to_new(np.asarray(run.vocab.pad_id)), np.int32)
            ids[0, :len(seq)] = seq
            logits = np.array(full(ids, (np.arange(width) < len(seq))[None].astype(np.int32)))[0, len(seq) - 1]
            if i == 0:
                logits[eos] = -np.inf  # at least one token before </s> (fairseq's min_len)
            seq.append(eos if i == limit - 1 else int(np.argmax(logits)))
            if seq[-1] == eos:
                break
        want = [int(t) for t in vmap.to_old(np.asarray(seq[start:]))]
        assert list(greedy["tokens"][r][greedy["response_mask"][r]]) == want


def test_encoder_decoder_rdm_samples_scores_and_predicts_lengths(tmp_path):
    from configs import length_predictor
    loop.run(parse(_tiny(objective="rdm")), tmp_path / "run")
    run = restore_run(tmp_path / "run")
    assert run.generator().decoding is None and not run.model.cfg.causal
    gen = run.generator()
    prompts = [list(run.vocab.encode("das haus ist klein")), list(run.vocab.encode("guten morgen"))]
    out = gen.generate(prompts, [4, 6], SamplerConfig(steps=3), jax.random.key(0), batch_size=2)
    assert (out["response_mask"].sum(1) == [4, 6]).all()
    assert (out["tokens"][np.arange(2), [1 + len(p) for p in prompts]] == run.vocab.eos_id).all()  # separator
    nll, se = gen.score(prompts, [[5, 6], [7]], jax.random.key(1), num_samples=2)
    assert np.isfinite(nll).all() and (se >= 0).all()
    lc = length_predictor.get_config(f"{tmp_path / 'run'},fast")
    lc.num_train_steps, lc.checkpoint_every_steps, lc.data.train_limit, lc.batch_size = 3, 3, 32, 8
    loop.run(parse(lc), tmp_path / "length")
    assert run.with_length_head(tmp_path / "length").generator().predict_lengths(prompts, 2).shape == (2, 2)


def test_decoder_only_ar_decodes_with_the_kv_cache(tmp_path):
    loop.run(parse(_tiny(name="bert-tiny")), tmp_path / "run")
    run = restore_run(tmp_path / "run")
    assert run.model.cfg.causal and not run.feature_spec().separator
    prompts = [list(run.vocab.encode("das haus ist klein"))]
    out = run.generator().generate(prompts, [0], run.run.sampler, jax.random.key(0))
    assert out["response_mask"][0].sum() >= 1 and out["tokens"][0, 0] == run.vocab.bos_id


def test_baseline_configs_and_their_paper_numbers():
    from configs import gigaword10k, iwslt14, wmt14
    for mod, variant, name, objective in ((iwslt14, "ar_decoder", "xlmr-base", "ar"),
                                          (iwslt14, "transformer_iwslt", "transformer-iwslt", "ar"),
                                          (iwslt14, "transformer_iwslt_rdm", "transformer-iwslt", "rdm"),
                                          (wmt14, "transformer_base", "transformer-base", "ar"),
                                          (wmt14, "transformer_base_rdm", "transformer-base", "rdm"),
                                          (gigaword10k, "transformer_base", "transformer-base", "ar")):
        run = parse(mod.get_config(variant), num_devices=1, num_processes=1)
        assert (run.model.name, run.objective, run.model.init) == (name, objective, "random")
        assert run.ar_label_smoothing == (0.1 if objective == "ar" else 0.0)
        assert ("causal", objective == "ar") in run.model.overrides.items() or objective == "rdm"
    run = parse(iwslt14.get_config("transformer_iwslt"), num_devices=1, num_processes=1)
    assert run.optimizer.schedule == "inverse_sqrt" and run.optimizer.warmup_steps == 4000
    assert run.optimizer.lr == 5e-4 and run.model.overrides["hidden_dropout"] == 0.3
    assert paper_model(run) == "transformer-iwslt:ar"
    rows = table_rows("iwslt14_de_en", paper_model(run), {
        "metrics": {"bleu": 30.0}, "paper_comparable": "bleu", "length": "ar-beam5", "num_examples": 9,
        "sampler": {"steps": 10}, "decoding": {}})
    assert "| 33.3 |" in rows[0] and "| - | 9 |" in rows[0]
    decoder = parse(iwslt14.get_config("ar_decoder"), num_devices=1, num_processes=1)
    assert paper_model(decoder) == "scratch:ar"
    rdm = parse(wmt14.get_config("transformer_base_rdm"), num_devices=1, num_processes=1)
    assert table_rows("wmt14_en_de", paper_model(rdm), {
        "metrics": {"bleu": 1.0}, "paper_comparable": "bleu", "length": "oracle", "num_examples": 1,
        "sampler": {"steps": 50}})[0].count("26.54") == 1


def test_restoring_with_the_other_objective_is_one_line(encdec_ar):
    from dlm_jax.rundir import RunDir
    c = RunDir(encdec_ar).read_config()
    c.objective = "rdm"
    with pytest.raises(ConfigError, match="trained with objective='ar'"):
        restore_run(encdec_ar, config=c)


def test_export_refuses_the_encoder_decoder(encdec_ar, tmp_path):
    """A ConfigError (the one error line of `python -m dlm_jax.export`, whose exit-2 plumbing the one-line-error
    cases of test_end_to_end.py check); nothing is written."""
    from dlm_jax.errors import ConfigError
    from dlm_jax.inference.export import export_run
    with pytest.raises(ConfigError, match="no HuggingFace format"):
        export_run(encdec_ar, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert not (tmp_path / "hf").exists()
