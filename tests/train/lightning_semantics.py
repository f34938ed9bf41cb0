"""Checks, on the real Lightning 2.x, the semantics that tests/train/test_trainer_semantics.cpp
expects from Kiln's Trainer: global_step and logged steps under manual optimization and gradient
accumulation, a training_step that returns None, sanity-check metrics, overfit_batches and
val_check_interval without check_val_every_n_epoch. Prints one line per fact; CI does not run it:
    build/torch-venv/bin/python tests/train/lightning_semantics.py
"""
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

warnings.filterwarnings("ignore")


class StepRecorder(Logger):
    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "rec"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, sorted(k for k in metrics if k != "epoch")))


def loader(n=40, batch_size=8, shuffle=False):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 4, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    ids = torch.arange(n, dtype=torch.float32)
    return DataLoader(TensorDataset(x, y, ids), batch_size=batch_size, shuffle=shuffle)


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)
        self.val_batches = 0
        self.train_ids = []

    def forward(self, x):
        return self.fc2(self.fc1(x).relu())

    def training_step(self, batch, batch_idx):
        x, y, ids = batch
        self.train_ids.append((self.current_epoch, ids.int().tolist()))
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log("epoch_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, _ = batch
        if not self.trainer.sanity_checking:
            self.val_batches += 1
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TwoOptimizers(Tiny):
    def __init__(self, second_every=1):
        super().__init__()
        self.automatic_optimization = False
        self.second_every = second_every

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        first, second = self.optimizers()
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        self.log("epoch_loss", loss, on_step=False, on_epoch=True)
        first.zero_grad()
        self.manual_backward(loss)
        first.step()
        if batch_idx % self.second_every == 0:
            loss2 = torch.nn.functional.cross_entropy(self(x), y)
            second.zero_grad()
            self.manual_backward(loss2)
            second.step()

    def configure_optimizers(self):
        sgd1 = torch.optim.SGD(self.fc1.parameters(), lr=0.1)
        sgd2 = torch.optim.SGD(self.fc2.parameters(), lr=0.05)
        return [sgd1, sgd2], [{"scheduler": torch.optim.lr_scheduler.StepLR(sgd1, 1, 0.5), "interval": "step"}]


class SkipsBatchOne(Tiny):
    def training_step(self, batch, batch_idx):
        return None if batch_idx == 1 else super().training_step(batch, batch_idx)


class StopsAtBatchOne(Tiny):
    def training_step(self, batch, batch_idx):
        if batch_idx == 1:
            self.trainer.should_stop = True
        return super().training_step(batch, batch_idx)


class Watch(pl.Callback):
    def __init__(self):
        self.seen = {}

    def on_sanity_check_end(self, trainer, module):
        self.seen["sanity_end"] = sorted(trainer.callback_metrics)

    def on_train_start(self, trainer, module):
        self.seen["train_start"] = sorted(trainer.callback_metrics)
        self.seen["train_start_bar"] = sorted(trainer.progress_bar_metrics)


def fit(module, logger=None, callbacks=(), val=None, train=None, **kwargs):
    args = dict(max_epochs=1, logger=logger or False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0)
    args.update(kwargs)
    trainer = pl.Trainer(callbacks=list(callbacks), **args)
    trainer.fit(module, train or loader(), val)
    return trainer


def main():
    torch.manual_seed(0)
    log = StepRecorder()
    t = fit(TwoOptimizers(second_every=2), logger=log, log_every_n_steps=2)
    print("manual, 2 optimizers (second on even batches), 5 batches: global_step", t.global_step)
    print("manual: logged steps", [s for s, _ in log.rows])
    print("manual: StepLR(interval=step) lr after fit", t.optimizers[0].param_groups[0]["lr"])
    t = fit(TwoOptimizers(), max_steps=5, max_epochs=-1)
    print("manual, 2 steps per batch, max_steps=5: global_step", t.global_step)

    log = StepRecorder()
    t = fit(Tiny(), logger=log, log_every_n_steps=2, accumulate_grad_batches=2, train=loader(48))
    print("accumulate 2, 6 batches, log_every_n_steps 2: global_step", t.global_step, "logged steps",
          [s for s, _ in log.rows])

    t = fit(SkipsBatchOne())
    print("automatic, training_step returns None on batch 1 of 5: global_step", t.global_step)

    watch = Watch()
    fit(Tiny(), callbacks=[watch], val=loader(), num_sanity_val_steps=2)
    print("sanity check: callback_metrics at on_sanity_check_end", watch.seen["sanity_end"])
    print("sanity check: callback_metrics / progress bar at on_train_start", watch.seen["train_start"],
          watch.seen["train_start_bar"])

    module = Tiny()
    t = fit(module, val=loader(batch_size=4), train=loader(batch_size=4, shuffle=True), overfit_batches=2,
            limit_val_batches=1, max_epochs=2)
    print("overfit_batches=2: num_training_batches", t.num_training_batches, "val batches per validation",
          module.val_batches // 2, "train ids", module.train_ids)

    module = Tiny()
    fit(module, val=loader(), val_check_interval=3, check_val_every_n_epoch=None, max_epochs=2)
    print("val_check_interval=3, check_val_every_n_epoch=None, 2 epochs of 5: val batches", module.val_batches,
          "(5 per validation)")

    module = StopsAtBatchOne()
    fit(module, val=loader(), max_epochs=3)
    print("should_stop set in training_step of batch 1: batches trained", len(module.train_ids), "val batches",
          module.val_batches, "(5 per validation)")

    module = Tiny()
    t = fit(module, val=loader(), fast_dev_run=2, val_check_interval=100, max_epochs=5)
    print("fast_dev_run=2, val_check_interval=100: global_step", t.global_step, "max_steps", t.max_steps,
          "val batches", module.val_batches)


if __name__ == "__main__":
    main()
