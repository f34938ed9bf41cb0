#!/usr/bin/env python3
"""PyTorch side of bench_training (issue 3): the same three models, data shapes and loop, timed alike.

MLP 784-512-512-10 with SGD (lr 0.01, momentum 0.9) and the demo CNN with Adam (lr 1e-3), batch
128, on synthetic Fashion-MNIST-shaped batches made before the clock starts, and a char-level
transformer LM (CharLM) with AdamW on batches of random tokens; `--warmup` untimed
steps, then `--steps` timed ones. Prints the torch configuration (bench/torch_reference.py's), then
one `RESULT bench=training side=torch model=...` line per model, in bench_training's format.
Not a test: nothing is checked against Kiln; bench/vs_torch.py puts the two side by side.
"""
import argparse
import math
import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import print_config  # noqa: E402  (the repository's one way to show torch's setup)

DISTINCT_BATCHES = 8  # cycled through by the loop, as in bench_training.cpp
PRECISION = "32-true"  # --precision: "bf16-mixed" runs forward and loss under bf16 autocast


def build_mlp():
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))


def build_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


# The char-level LM: vocab 65 (tiny-shakespeare's), width 128, 4 heads, 2 pre-norm blocks, 32 tokens.
LM_VOCAB, LM_WIDTH, LM_HEADS, LM_LAYERS, LM_CONTEXT = 65, 128, 4, 2, 32


class Block(nn.Module):
    """kiln::nn::TransformerBlock: x + attn(ln1(x)) under a causal mask, then x + mlp(ln2(x)), GELU (erf)."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        causal = torch.triu(torch.ones(x.size(1), x.size(1), dtype=torch.bool), diagonal=1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    """Token + learned position embeddings, blocks, a final LayerNorm, a head; logits flattened to (N*T, vocab)."""

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(LM_VOCAB, LM_WIDTH)
        self.pos_emb = nn.Parameter(torch.randn(LM_CONTEXT, LM_WIDTH) * 0.02)
        self.blocks = nn.ModuleList([Block(LM_WIDTH, LM_HEADS) for _ in range(LM_LAYERS)])
        self.ln_f = nn.LayerNorm(LM_WIDTH)
        self.head = nn.Linear(LM_WIDTH, LM_VOCAB)

    def forward(self, idx):
        x = self.tok_emb(idx) + self.pos_emb
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)).reshape(-1, LM_VOCAB)


def token_batches(batch, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, LM_VOCAB, (batch, LM_CONTEXT), generator=gen),
             torch.randint(0, LM_VOCAB, (batch * LM_CONTEXT,), generator=gen)) for _ in range(DISTINCT_BATCHES)]


def synthetic_batches(image_shape, batch, seed):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn((batch, *image_shape), generator=gen), torch.randint(0, 10, (batch,), generator=gen))
            for _ in range(DISTINCT_BATCHES)]


def train(model, optimizer, batches, warmup, steps):
    """Seconds for `steps` timed steps after `warmup` untimed ones, and the last loss."""
    loss = None

    def step(i):
        nonlocal loss
        x, y = batches[i % DISTINCT_BATCHES]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=PRECISION == "bf16-mixed"):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for i in range(warmup):
        step(i)
    start = time.perf_counter()
    for i in range(steps):
        step(warmup + i)
    return time.perf_counter() - start, loss.item()


def report(model_name, seconds, loss, args):
    print(f"RESULT bench=training side=torch model={model_name} precision={PRECISION} samples_per_s={args.steps * args.batch / seconds:.2f} "
          f"ms_per_step={1e3 * seconds / args.steps:.4f} steps={args.steps} warmup={args.warmup} "
          f"batch={args.batch} threads={torch.get_num_threads()} loss={loss:.5f}", flush=True)
    if not math.isfinite(loss):
        sys.exit(f"training_torch.py: the {model_name} loss is {loss} after {args.warmup + args.steps} steps")


def mlp_floor_ms(model, optimizer, batches, args):
    """ms per repetition of the MLP step's eight products and its optimizer step, called alone in
    sequence without autograd, as bench_training's `# mlp floor` line."""
    w1, b1, w2, b2, w3, b3 = model.parameters()
    x = batches[0][0]
    with torch.no_grad():
        h1 = torch.addmm(b1, x, w1.t()).relu()
        h2 = torch.addmm(b2, h1, w2.t()).relu()
        g3, g2, g1 = torch.randn(args.batch, 10), torch.randn(args.batch, 512), torch.randn(args.batch, 512)

        def products_and_step():
            torch.addmm(b1, x, w1.t()), torch.addmm(b2, h1, w2.t()), torch.addmm(b3, h2, w3.t())
            g3 @ w3, g3.t() @ h2, g2 @ w2, g2.t() @ h1, g1.t() @ x
            optimizer.step()

        for _ in range(args.warmup):
            products_and_step()
        start = time.perf_counter()
        for _ in range(args.steps):
            products_and_step()
        return 1e3 * (time.perf_counter() - start) / args.steps


def run(model_name, args):
    torch.manual_seed(0)
    if model_name == "mlp":
        model = build_mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        batches = synthetic_batches((784,), args.batch, 1)
    elif model_name == "cnn":
        model = build_cnn()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        batches = synthetic_batches((1, 28, 28), args.batch, 2)
    else:
        model = CharLM()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        batches = token_batches(args.batch, 3)
    seconds, loss = train(model, optimizer, batches, args.warmup, args.steps)
    report(model_name, seconds, loss, args)
    if model_name == "mlp":
        floor, step = mlp_floor_ms(model, optimizer, batches, args), 1e3 * seconds / args.steps
        print(f"# mlp floor: products + optimizer step alone {floor:.4f} ms, the training step {step:.4f} ms "
              f"({step / floor:.3f}x the floor)", flush=True)


def positive(minimum):
    def parse(text):
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text}")
        return value
    return parse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn", "transformer", "all"), default="all")
    parser.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                        help="f32, or the forward under torch.autocast('cpu', dtype=torch.bfloat16)")
    parser.add_argument("--steps", type=positive(1), default=50, help="timed steps per model")
    parser.add_argument("--warmup", type=positive(0), default=5, help="untimed steps before them")
    parser.add_argument("--batch", type=positive(1), default=128)
    parser.add_argument("--threads", type=positive(1), default=2)
    args = parser.parse_args()
    global PRECISION
    PRECISION = args.precision

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)  # raises once any inter-op work has started
    except RuntimeError:
        pass
    torch.autograd.set_detect_anomaly(False)
    print_config(args.threads)
    for name in ("mlp", "cnn", "transformer"):
        if args.model in (name, "all"):
            run(name, args)


if __name__ == "__main__":
    main()
