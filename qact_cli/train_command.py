"""`qact train` behind the CLI: the options as a `TrainConfig`, the training with progress on stderr."""

from __future__ import annotations

from .errors import UsageError
from .options.run import RunOptions
from .options.schema import pick
from .options.train import TrainConfig


def run_train(values: dict) -> None:
    """`values`: the command's parameters (qact_cli/cli.py generates them from the schemas)."""
    for flag, given in (("--dataset", values["dataset"]), ("--arch (or --backbone)", values["arch"] or values["backbone"]),
                        ("--out", values["out"])):
        if not given:
            raise UsageError(f"missing {flag}; see `qact train --help`")
    from .utils import check_output_file

    check_output_file(values["out"], "--out")  # before any training
    cfg = TrainConfig(**{**pick(TrainConfig, values), **pick(RunOptions, values)})
    cfg.arch = cfg.arch or "probe"  # --backbone alone: a probe on it
    _train(cfg)


def _train(cfg: TrainConfig) -> None:
    import typer

    from . import distributed
    from .training import train
    from .ui import progress, stderr_console

    distributed.setup(cfg.device)  # under torchrun: join the process group; rank 0 alone prints
    console = stderr_console()
    console.quiet = not distributed.is_main()
    label = f"{cfg.arch}/{cfg.act}"
    with progress(console, "loss") as bar, distributed.guard("training"):
        task = bar.add_task(f"{label} epoch 1", total=None, loss="")

        def on_step(step, steps, value):
            bar.update(task, completed=step, total=steps, loss=f"loss {value:.4f}")

        def on_epoch(row):
            bar.update(task, description=f"{label} epoch {row['epoch'] + 1}", completed=0)
            console.print(f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  val acc {row['val_acc']:.4f}  lr {row['lr']:.2e}",
                          highlight=False)

        info = train(cfg, on_epoch=on_epoch, on_step=on_step, log=lambda s: console.print(s, highlight=False))
    if distributed.is_main():
        typer.echo(f"best validation accuracy {info['best_val_acc']:.4f} (epoch {info['best_epoch']}) -> {cfg.out}")
