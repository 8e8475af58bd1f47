"""One Lightning training run through `CkptioCheckpointIO`, for the acceptance tests: a small
regression trained with Adam and a step schedule on fixed data, checkpointed every epoch to
`--dirpath` (any URI) with `ModelCheckpoint(save_last=True, save_top_k=2)`.

`--kill-mid-epoch E` SIGKILLs the process in the middle of epoch E; `--kill-mid-save E`
SIGKILLs it halfway through the bytes of the first checkpoint saved at the end of epoch E.
`--resume` continues from the last checkpoint (`ckpt_path="last"`, or the plugin's own lookup
with `--find-last ckptio` where Lightning's cannot find it). The final weights are written
with `torch.save` to `--out`, and where the run started to `--out` + `.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from ckptio.lightning import CkptioCheckpointIO

WIDTH = 1024  # 4 MiB of weights, 12 MiB with Adam's state: a save takes several writes


class Regression(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.save_hyperparameters({"width": WIDTH, "betas": (0.9, 0.99)})
        self.net = torch.nn.Sequential(
            torch.nn.Linear(16, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, 1)
        )
        self.hidden = torch.nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.net[0](x))
        return self.net[2](torch.tanh(self.hidden(h)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-3, betas=(0.9, 0.99))
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return [optimizer], [schedule]


def data() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 16, generator=g)
    y = x.sum(dim=1, keepdim=True).sin()
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=False)


class KillMidEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.current_epoch == self.epoch and args[-1] == 3:
            os.kill(os.getpid(), signal.SIGKILL)


class Epoch(Callback):
    """Tells the kill-mid-save progress callback which epoch is saving, and remembers the first
    epoch this process trained."""

    current = -1
    first: int | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if Epoch.first is None:
            Epoch.first = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, *args: Any) -> None:
        Epoch.current = trainer.current_epoch


def kill_halfway(epoch: int) -> Any:
    def progress(done: int, total: int) -> None:
        if Epoch.current == epoch and total and done >= total // 2:
            os.kill(os.getpid(), signal.SIGKILL)

    return progress


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dirpath", required=True)
    ap.add_argument("--options", default="{}")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--kill-mid-epoch", type=int)
    ap.add_argument("--kill-mid-save", type=int)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--find-last", choices=["lightning", "ckptio"], default="lightning")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    L.seed_everything(0, workers=True)
    progress = None if args.kill_mid_save is None else kill_halfway(args.kill_mid_save)
    io = CkptioCheckpointIO(json.loads(args.options) or None, progress=progress)
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=args.dirpath, save_last=True, save_top_k=2, monitor="train_loss"),
        Epoch(),
    ]
    if args.kill_mid_epoch is not None:
        callbacks.append(KillMidEpoch(args.kill_mid_epoch))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        plugins=[io],
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    ckpt_path = None
    if args.resume:
        ckpt_path = "last" if args.find_last == "lightning" else io.latest(args.dirpath)
        assert ckpt_path, f"no last checkpoint under {args.dirpath}"
    trainer.fit(Regression(), data(), ckpt_path=ckpt_path)
    torch.save(trainer.lightning_module.state_dict(), args.out)
    with open(args.out + ".json", "w") as f:
        json.dump({"ckpt_path": ckpt_path, "first_epoch": Epoch.first}, f)


if __name__ == "__main__":
    main()
