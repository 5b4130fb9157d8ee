"""Train-step throughput: dlm_jax's jitted step vs a straightforward PyTorch step with the same RDM loss.

Both sides train the same weights on the same batch of `<s> prompt response </s>` sequences: corrupt the response
(t ~ U{1..T}, mask with probability t/T), cross-entropy at the masked positions weighted by lambda(t) = 1-(t-1)/T,
normalised by the response length, then AdamW (the paper's betas / eps / weight decay) with gradient clipping 1.0.
The PyTorch side is what one writes first: the HuggingFace `*ForMaskedLM` forward (logits at every position),
`F.cross_entropy`, `loss.backward()`, `torch.optim.AdamW`, eager float32. dlm_jax's step is the trainer's own
(`make_train_step`), with the head evaluated only at the masked positions (`diffusion.max_predictions`).
Before timing, both losses are computed on one identical corrupted batch and compared.

    python bench/train_step.py                       # bert-tiny (bundled BERT) and xlmr-base, default batches
    python bench/train_step.py --shapes bert-tiny --batch 64 --length 64 --steps 20

tokens/s counts real (non-padding) tokens per second of wall time, after compilation / warm-up.
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
from bench.sampler import hf_model, print_header  # noqa: E402
from dlm_jax.config import base_config, parse  # noqa: E402
from dlm_jax.diffusion import RDMConfig, corrupt, rdm_loss  # noqa: E402
from dlm_jax.training.step import build_optimizer, diffusion_loss_fn, make_train_step  # noqa: E402

T = 50


def make_batch(batch: int, length: int, vocab_lo: int, vocab_hi: int, pad: int, bos: int, eos: int, seed: int = 0
               ) -> dict[str, np.ndarray]:
    """Rows of `<s> prompt response </s>`: prompt about half, lengths varied by up to 25% (padding included)."""
    rng = np.random.default_rng(seed)
    tokens = np.full((batch, length), pad, np.int32)
    resp = np.zeros((batch, length), bool)
    for i in range(batch):
        total = length - (i % 4) * max(1, length // 16)
        p = (total - 2) // 2
        row = [bos, *rng.integers(vocab_lo, vocab_hi, total - 2).tolist(), eos]
        tokens[i, :total] = row
        resp[i, 1 + p:total] = True
    return {"tokens": tokens, "response_mask": resp, "padding_mask": (tokens != pad).astype(np.int32)}


def torch_loss(model, tokens, response, attn, noised, masked, t):
    """The RDM loss, straightforwardly: logits at every position, CE at the masked ones."""
    import torch.nn.functional as F
    logits = model(input_ids=noised, attention_mask=attn).logits
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1), reduction="none")
    ce = ce.view(tokens.shape) * masked
    w = 1.0 - (t.float() - 1.0) / T
    return ((w[:, None] * ce).sum(1) / response.sum(1).clamp(min=1)).mean()


def torch_corrupt(tokens, response, mask_id, gen):
    import torch
    t = torch.randint(1, T + 1, (tokens.shape[0],), generator=gen)
    masked = response & (torch.rand(tokens.shape, generator=gen) < t[:, None] / T)
    return torch.where(masked, torch.full_like(tokens, mask_id), tokens), masked, t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="bert-tiny,xlmr-base")
    ap.add_argument("--batch", type=int, default=0, help="sequences per step (0: 64 for bert-tiny, 8 for xlmr-base)")
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: 20 for bert-tiny, 3 for xlmr-base)")
    ap.add_argument("--max-predictions", type=int, default=0, help="0: the longest response in the batch")
    ap.add_argument("--head-chunk", type=int, default=0, help="diffusion.head_chunk (0: whole logits)")
    args = ap.parse_args()
    import torch
    print_header(["shape", "batch x length", "real tokens/step", "dlm_jax s/step", "dlm_jax tok/s", "torch s/step",
                  "torch tok/s", "speedup", "loss (jax / torch, same corruption)"])
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            tmodel, d = hf_model(shape, Path(tmp))
            B = args.batch or (64 if shape == "bert-tiny" else 8)
            steps = args.steps or (20 if shape == "bert-tiny" else 3)
            pre = dlm_jax.load_pretrained(d, hidden_dropout=0.0, attention_dropout=0.0)
            cfg = pre.config
            if shape == "bert-tiny":
                pad, bos, eos, mask_id, lo = 0, 101, 102, 103, 1000
            else:
                pad, bos, eos, mask_id, lo = 1, 0, 2, cfg.vocab_size - 1, 1000
            for m in tmodel.modules():  # dropout off on both sides: identical losses
                if isinstance(m, torch.nn.Dropout):
                    m.p = 0.0
            tmodel.train()
            batch = make_batch(B, args.length, lo, min(cfg.vocab_size - 2, 30_000), pad, bos, eos)
            n_tok = int(batch["padding_mask"].sum())
            P = args.max_predictions or int(batch["response_mask"].sum(1).max())
            rdm = RDMConfig(mask_id=mask_id, num_timesteps=T, max_predictions=P, head_chunk=args.head_chunk)
            model = pre.model

            # Same corruption on both sides: loss check.
            jb = {k: jnp.asarray(v) for k, v in batch.items()}
            key = jax.random.key(0)
            noised, masked, t = corrupt(jb["tokens"], jb["response_mask"], key, rdm)
            at = lambda x, pos: model.apply({"params": pre.params}, x, attention_mask=jb["padding_mask"],  # noqa
                                            output_positions=pos)
            jloss = float(rdm_loss(at, jb, key, rdm)[0])
            tt = {k: torch.tensor(np.asarray(v)) for k, v in batch.items()}
            tt["tokens"] = tt["tokens"].long()
            with torch.no_grad():
                tl = float(torch_loss(tmodel, tt["tokens"], tt["response_mask"], tt["padding_mask"].long(),
                                      torch.tensor(np.asarray(noised)).long(), torch.tensor(np.asarray(masked)),
                                      torch.tensor(np.asarray(t))))

            # dlm_jax: the trainer's step.
            c = base_config()
            c.optimizer.lr, c.optimizer.warmup_steps = 1e-4, 1
            tx, sched = build_optimizer(parse(c, num_devices=1, num_processes=1).optimizer, 1000)
            step = jax.jit(make_train_step(diffusion_loss_fn(model, rdm), tx, sched, grad_accum=1, seed=0),
                           donate_argnums=(0,))
            state = {"step": jnp.zeros((), jnp.int32), "params": pre.params, "opt_state": tx.init(pre.params),
                     "bad_steps": jnp.zeros((), jnp.int32)}
            state, m = step(state, jb, None)
            jax.block_until_ready(m["loss"])
            t0 = time.perf_counter()
            for _ in range(steps):
                state, m = step(state, jb, None)
            jax.block_until_ready(m["loss"])
            tj = (time.perf_counter() - t0) / steps

            # PyTorch: the straightforward step.
            topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01)
            gen = torch.Generator().manual_seed(0)
            attn = tt["padding_mask"].long()

            def torch_step():
                noised_t, masked_t, t_t = torch_corrupt(tt["tokens"], tt["response_mask"], mask_id, gen)
                loss = torch_loss(tmodel, tt["tokens"], tt["response_mask"], attn, noised_t, masked_t, t_t)
                topt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(tmodel.parameters(), 1.0)
                topt.step()
                return loss

            torch_step()
            t0 = time.perf_counter()
            for _ in range(steps):
                torch_step()
            tp = (time.perf_counter() - t0) / steps
            print(f"| {shape} | {B} x {args.length} (P={P}) | {n_tok} | {tj:.3f} | {n_tok / tj:,.0f} | {tp:.3f} | "
                  f"{n_tok / tp:,.0f} | {tp / tj:.2f}x | {jloss:.5f} / {tl:.5f} |", flush=True)
            assert math.isclose(jloss, tl, rel_tol=1e-4), "the two losses differ: not the same computation"


if __name__ == "__main__":
    main()
