#!/usr/bin/env python3
"""PyTorch Lightning side of bench_fit_cnn (issue 5): Trainer.fit of the demo CNN on Fashion-MNIST.

Same model, data, optimizer (Adam, lr 2e-3), batch size (128, shuffled) and threads as
bench_fit_cnn.cpp: the 60,000 training images read from the same IDX .gz files with gzip + numpy
and normalized the same way, a TensorDataset + DataLoader without workers, and a Trainer with no
validation, checkpoint, logger, progress bar or model summary. Prints `EPOCH ...` lines and one
`RESULT bench=fit_cnn side=lightning ...` line in bench_fit_cnn's format: mean epoch wall time,
process start (KILN_BENCH_T0, else /proc/self/stat) to the first on_train_batch_start, peak RSS.
Not a test: bench/vs_torch.py runs it beside bench_fit_cnn.
"""
import argparse
import gzip
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import lightning as L

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_reference import print_config  # noqa: E402  (the repository's one way to show torch's setup)

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and standard deviation, as bench_fit_cnn.cpp


def process_start():
    """(Unix seconds when this process started, where that figure came from)."""
    env = os.environ.get("KILN_BENCH_T0")
    if env is not None:
        t0 = float(env)
        if not t0 > 0:
            sys.exit(f"fit_cnn_lightning.py: KILN_BENCH_T0 must be Unix seconds, got '{env}'")
        return t0, "env"
    # Both figures count from boot; /proc/stat's btime would add up to 1 s of rounding.
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces
    started_after_boot = float(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime in ticks
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - started_after_boot), "proc"


def read_idx_gz(path):
    """An IDX file of unsigned bytes (gzip-compressed) as a numpy array of its stored shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    if magic >> 16 != 0 or (magic >> 8) & 0xFF != 0x08:
        sys.exit(f"fit_cnn_lightning.py: {path} is not an unsigned-byte IDX file (magic {magic:#010x})")
    ndim = magic & 0xFF
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_train(root):
    images = read_idx_gz(os.path.join(root, "train-images-idx3-ubyte.gz"))
    labels = read_idx_gz(os.path.join(root, "train-labels-idx1-ubyte.gz"))
    x = torch.from_numpy(images.copy()).unsqueeze(1).to(torch.float32).div_(255.0).sub_(MEAN).div_(STD)
    y = torch.from_numpy(labels.astype(np.int64))
    return torch.utils.data.TensorDataset(x, y)


class FashionCNN(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))
        self.last_loss = None

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.last_loss = loss.detach()
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=2e-3)


class FitTimer(L.Callback):
    """Reads the clocks at the hooks bench_fit_cnn.cpp's FitTimer uses."""

    def __init__(self, start):
        self.start = start
        self.start_to_first_step = None
        self.epoch_seconds, self.epoch_batches = [], []
        self._epoch_start, self._batches = 0.0, 0

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start, self._batches = time.perf_counter(), 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.start_to_first_step is None:
            self.start_to_first_step = time.time() - self.start
        self._batches += 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        self.epoch_batches.append(self._batches)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=positive, default=1)
    parser.add_argument("--limit-batches", type=int, default=-1, help="batches per epoch; -1: all")
    parser.add_argument("--threads", type=positive, default=2)
    parser.add_argument("--data", default=FASHION_MNIST_ROOT)
    args = parser.parse_args()
    if args.limit_batches == 0 or args.limit_batches < -1:
        parser.error(f"--limit-batches expects -1 or an integer >= 1, got {args.limit_batches}")
    start, start_source = process_start()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)  # raises once any inter-op work has started
    except RuntimeError:
        pass
    L.seed_everything(42, verbose=False)
    loader = torch.utils.data.DataLoader(fashion_mnist_train(args.data), batch_size=128, shuffle=True, num_workers=0)
    model = FashionCNN()
    timer = FitTimer(start)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=args.epochs,
                        limit_train_batches=1.0 if args.limit_batches < 0 else args.limit_batches,
                        enable_checkpointing=False, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(model, train_dataloaders=loader)

    print_config(args.threads)  # after fit: it is not part of the time to the first step
    print(f"  lightning {L.__version__}")
    if not timer.epoch_seconds:
        sys.exit("fit_cnn_lightning.py: fit ran no epoch")
    for epoch, (seconds, batches) in enumerate(zip(timer.epoch_seconds, timer.epoch_batches)):
        print(f"EPOCH bench=fit_cnn side=lightning epoch={epoch} seconds={seconds:.4f} batches={batches}")
    loss = model.last_loss.item()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    print(f"RESULT bench=fit_cnn side=lightning epoch_s={sum(timer.epoch_seconds) / len(timer.epoch_seconds):.4f} "
          f"first_step_s={timer.start_to_first_step:.4f} peak_rss_mib={peak_rss_mib:.1f} "
          f"epochs={len(timer.epoch_seconds)} batches_per_epoch={timer.epoch_batches[0]} "
          f"threads={torch.get_num_threads()} start_clock={start_source} loss={loss:.5f}", flush=True)
    if not math.isfinite(loss):
        sys.exit(f"fit_cnn_lightning.py: the loss is {loss} at the end of fit")


if __name__ == "__main__":
    main()
