"""Sampler throughput: dlm_jax's jitted fori_loop sampler vs a straightforward PyTorch reparam sampler.

Both decode the same batch with the same weights and the deterministic reparam strategy
(`reparam-uncond-deterministic-cosine`), so their outputs are compared token for token. The PyTorch side is a
direct transcription of the paper code's `_reparam_decoding` loop around the HuggingFace `*ForMaskedLM` model
(eager, float32, `torch.inference_mode`).

    python bench/sampler.py                                   # the default grid below
    python bench/sampler.py --shapes bert-tiny --steps 10,50 --batch-sizes 1,8,32 --lengths 32,64

Shapes: `bert-tiny` uses the bundled pretrained BERT (real weights); `xlmr-base` a randomly initialised
XLMRobertaForMaskedLM of the real size (12 layers, hidden 768, 250,002-id head); `modernbert-base` a randomly
initialised ModernBertForMaskedLM of the real size (22 layers, hidden 768, window 128, eager attention):

    python bench/sampler.py --shapes modernbert-base --steps 10 --lengths 64,256 --xlmr-batch-sizes 1,4 Each row of a batch has a prompt
of about half the sequence and a response of the rest, with lengths varied across rows (padding included).
tokens/s counts generated (response) tokens per second of wall time, after compilation / warm-up.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import dlm_jax  # noqa: E402
from dlm_jax.diffusion import SamplerConfig, build_inputs, sample  # noqa: E402

STRATEGY = "reparam-uncond-deterministic-cosine"


def make_batch(batch: int, length: int, vocab: int, special: int, seed: int = 0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts of about half of `length`, responses filling the rest; rows differ by up to 25% in length."""
    rng = np.random.default_rng(seed)
    prompts, lens = [], []
    for i in range(batch):
        total = length - (i % 4) * max(1, length // 16)  # some rows padded
        p = (total - 1) // 2
        prompts.append(rng.integers(special, vocab, p).tolist())
        lens.append(total - 1 - p)
    return prompts, lens


def torch_reparam_sample(model, tokens, response, attn, steps: int, mask_id: int):
    """The paper code's `_reparam_decoding` (uncond, deterministic, cosine), argmax, with the HF model."""
    import torch
    neg_inf, zero, big = (torch.tensor(v, device=tokens.device) for v in (-math.inf, 0.0, 1000.0))
    out = torch.where(response, torch.full_like(tokens, mask_id), tokens)
    scores = torch.where(response, neg_inf, zero)
    xt_neq_x0 = response.clone()
    n = response.sum(1, keepdim=True).double()
    for step in range(steps):
        logits = model(input_ids=out, attention_mask=attn).logits
        logits[..., mask_id] = -math.inf
        logp = torch.log_softmax(logits, dim=-1)
        cur_sc, cur_tok = logp.max(-1)
        rate = math.cos((step + 1) / steps * math.pi / 2)
        cutoff_len = torch.floor(n * rate + 1e-9).long()
        s = torch.where(response, cur_sc, big)
        # Ties broken by position, as dlm_jax's stable ranking does.
        order = torch.sort(s, dim=-1, stable=True).indices
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(s.shape[1], device=s.device).expand_as(order))
        low = response & (rank < cutoff_len)
        to_noise = (~xt_neq_x0 & low) | (xt_neq_x0 & low)
        out = torch.where(to_noise, torch.full_like(out, mask_id), out)
        scores = torch.where(to_noise, neg_inf, scores)
        to_x0 = xt_neq_x0 & ~low
        out = torch.where(to_x0, cur_tok, out)
        scores = torch.where(to_x0, cur_sc, scores)
        xt_neq_x0 = (xt_neq_x0 | low) & low
    return out


XLMR_SHAPES = {"xlmr-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
               "xlmr-large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                  intermediate_size=4096)}


MODERNBERT_SHAPES = {"modernbert-base": dict(hidden_size=768, num_hidden_layers=22, num_attention_heads=12,
                                             intermediate_size=1152)}
SPECIAL = {"bert-tiny": (101, 0), "xlmr-base": (0, 1), "xlmr-large": (0, 1), "modernbert-base": (50281, 50283)}


def hf_model(shape: str, workdir: Path):
    """(torch model, HF dir) for the shape: the bundled BERT, or a random XLM-R base / large or ModernBERT-base
    (eager attention, with its sliding window) saved to `workdir`."""
    import torch
    import transformers
    if shape == "bert-tiny":
        d = dlm_jax.bundled_bert_dir()
        return transformers.BertForMaskedLM.from_pretrained(str(d)).eval(), d
    if shape in XLMR_SHAPES:
        torch.manual_seed(0)
        m = transformers.XLMRobertaForMaskedLM(transformers.XLMRobertaConfig(
            vocab_size=250_002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            layer_norm_eps=1e-5, **XLMR_SHAPES[shape])).eval()
        m.save_pretrained(workdir / shape)
        return m, workdir / shape
    if shape in MODERNBERT_SHAPES:
        torch.manual_seed(0)
        cfg = transformers.ModernBertConfig(vocab_size=50_368, **MODERNBERT_SHAPES[shape])
        cfg._attn_implementation = "eager"
        m = transformers.ModernBertForMaskedLM(cfg).eval()
        m.save_pretrained(workdir / shape)
        return m, workdir / shape
    raise SystemExit(f"unknown shape {shape!r}; choose bert-tiny, xlmr-base, xlmr-large or modernbert-base")


def print_header(columns: list[str]) -> None:
    """Versions and threads, then a markdown table header."""
    import torch
    print(f"# jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), cpus {os.cpu_count()}")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))


def time_it(fn, repeats: int) -> float:
    fn()  # warm-up / compile
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="bert-tiny,xlmr-base")
    ap.add_argument("--steps", default="10,50")
    ap.add_argument("--batch-sizes", default="1,8,32")
    ap.add_argument("--lengths", default="32,64", help="total sequence lengths (prompt + response)")
    ap.add_argument("--xlmr-batch-sizes", default="1,8", help="batch sizes for the xlmr shapes (slow on CPU)")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs per cell (best is reported)")
    ap.add_argument("--full-head", action="store_true",
                    help="evaluate the output head at every position (as the PyTorch loop does) instead of the "
                         "response positions only")
    ap.add_argument("--no-torch", action="store_true", help="only time dlm_jax")
    ap.add_argument("--torch-device", default="cpu", help="cpu, or cuda to run the PyTorch loop on the GPU")
    args = ap.parse_args()
    import torch
    torch.set_grad_enabled(False)
    dev = torch.device(args.torch_device)
    print_header(["shape", "S", "batch", "length", "resp tokens", "dlm_jax s", "dlm_jax tok/s", "torch s",
                  "torch tok/s", "speedup", "outputs equal"])
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            tmodel, d = hf_model(shape, Path(tmp))
            tmodel = tmodel.to(dev)
            pre = dlm_jax.load_pretrained(d)
            mask_id = 103 if shape == "bert-tiny" else tmodel.config.vocab_size - 1
            bos, pad = SPECIAL[shape]
            model = pre.model

            def make_run(config: SamplerConfig, max_response: int | None):
                """As `dlm_jax.inference.Generator`: params are an argument; the head runs at response positions."""
                @jax.jit
                def run(params, tokens, resp, attn):
                    def fn(t, positions=None):
                        return model.apply({"params": params}, t, attention_mask=attn, output_positions=positions)
                    return sample(fn, tokens, resp, jax.random.key(0), config, mask_id=mask_id,
                                  max_response=max_response).tokens
                return run

            batches = args.batch_sizes if shape == "bert-tiny" else args.xlmr_batch_sizes
            for steps in map(int, args.steps.split(",")):
                config = SamplerConfig(steps=steps, strategy=STRATEGY)
                for length in map(int, args.lengths.split(",")):
                    for b in map(int, batches.split(",")):
                        prompts, lens = make_batch(b, length, min(tmodel.config.vocab_size - 400, 250_000), 1000)
                        tokens, resp, attn = build_inputs(prompts, lens, bos_id=bos, pad_id=pad, mask_id=mask_id,
                                                          max_len=length)
                        n_resp = int(resp.sum())
                        jrun = make_run(config, None if args.full_head else int(resp.sum(1).max()))
                        jt = jnp.asarray(tokens), jnp.asarray(resp), jnp.asarray(attn)
                        ours = None

                        def go_jax():
                            nonlocal ours
                            ours = np.asarray(jax.block_until_ready(jrun(pre.params, *jt)))

                        tj = time_it(go_jax, args.repeats)
                        row = f"| {shape} | {steps} | {b} | {length} | {n_resp} | {tj:.3f} | {n_resp / tj:,.0f} |"
                        if args.no_torch:
                            print(row + " - | - | - | - |", flush=True)
                            continue
                        tt_in = (torch.tensor(tokens, dtype=torch.long, device=dev),
                                 torch.tensor(resp, device=dev), torch.tensor(attn, dtype=torch.long, device=dev))
                        ref = None

                        def go_torch():
                            nonlocal ref
                            ref = torch_reparam_sample(tmodel, *tt_in, steps, mask_id).cpu().numpy()

                        tt = time_it(go_torch, args.repeats)
                        equal = float((ref == ours)[resp].mean())
                        print(row + f" {tt:.3f} | {n_resp / tt:,.0f} | {tt / tj:.2f}x | "
                              f"{'yes' if equal == 1.0 else f'{equal:.1%} of tokens'} |", flush=True)


if __name__ == "__main__":
    main()
