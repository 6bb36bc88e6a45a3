"""The `qact` command line: parse options, call the library, print. The work lives in the modules."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import config_callback
from .errors import CheckFailed, QactError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, add_completion=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},  # subcommands inherit -h
                  help="Robustness evaluation of image classifiers under distribution shift (Quantile Activation).")


def _version(value: bool) -> None:
    if not value:
        return
    import torch
    import torchvision

    from . import __version__
    from .utils import select_device

    typer.echo(f"qact {__version__} (torch {torch.__version__}, torchvision {torchvision.__version__}, "
               f"device auto = {select_device('auto')})")
    raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the qact, torch and torchvision versions and the auto device.")] = False,
):
    """Robustness evaluation of image classifiers under distribution shift (Quantile Activation)."""

# Options every command takes (docs/protocol.md, "Options every command shares")
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", callback=config_callback, is_eager=True, exists=True,
                                                   dir_okay=False, help="YAML file of option values; flags override it.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda|cuda:N|mps (auto: CUDA if available, else CPU).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for everything random; recorded in outputs.")]
DataRootOpt = Annotated[Optional[str], typer.Option("--data-root", help="Data folder (default $QACT_DATA or ~/.cache/qact/data).")]
DownloadOpt = Annotated[bool, typer.Option("--download", help="Fetch a missing published dataset (md5-verified, resumable).")]
WorkersOpt = Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes (default: up to 4 for image folders, none for arrays; 0: load in the main process).")]

# The evaluation options of `eval` and `compare` (declared once: qact_cli/eval/options.py validates them)
EvalDatasetOpt = Annotated[Optional[str], typer.Option("--dataset", help="digits, cifar10, cifar100, tinyimagenet (clean); cifar10c, cifar100c, tinyimagenetc, imagenetc, mnistc (published -C sets); npy:DIR, folder:DIR (your own arrays / ImageFolder tree); gen:NAME (corruptions generated from NAME's test split).")]
CorruptionsOpt = Annotated[str, typer.Option("--corruptions", help="common|extra|all|NAME,NAME...")]
SeveritiesOpt = Annotated[Optional[str], typer.Option("--severities", help="0-5 or 0,1,3 (0 = clean test split). Default: 0-5, or 0 on a clean dataset.")]
EvalBatchOpt = Annotated[int, typer.Option("--batch-size")]
ContextOpt = Annotated[str, typer.Option("--context", help="QAct context: batch (the eval batch) or stored (kept from training).")]
AdaptOpt = Annotated[str, typer.Option("--adapt", help="none|bn: re-estimate normalisation statistics on each cell first.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="N evenly spaced images of each cell, in file order (the same for every model).")]
# single-model flags: they describe the one non-checkpoint MODEL given (a spec like torchvision:resnet18)
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="The model's weights (.safetensors or a state dict; torchvision: also DEFAULT, IMAGENET1K_V1...). For qact DINOv2 probes: the backbone's weights file.")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option("--model-kwargs", help="JSON or YAML mapping of keyword arguments for the model's builder.")]
NumClassesOpt = Annotated[Optional[int], typer.Option("--num-classes", help="The model's number of outputs (classes).")]
InputSizeOpt = Annotated[Optional[str], typer.Option("--input-size", help="H[,W]: the image size the model expects.")]
ResizeOpt = Annotated[Optional[str], typer.Option("--resize", help="bilinear|bicubic: resize images to --input-size on the device (default: they must have it).")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", help="R,G,B normalisation mean on the 0..1 scale (default: ImageNet's, or the weights').")]
StdOpt = Annotated[Optional[str], typer.Option("--std", help="R,G,B normalisation std on the 0..1 scale.")]
ClassNamesOpt = Annotated[Optional[str], typer.Option("--class-names", help="FILE (one name a line) or a,b,c: the model's classes, matched by name to the dataset's.")]
TrustOpt = Annotated[bool, typer.Option("--trust-model-file", help="Allow TorchScript (.ts) and torch.export (.pt2) files, which can run code while loading.")]


def _err(message: str) -> None:
    typer.echo(f"qact: {message}", err=True)


# Click's own exception base, whichever click typer uses (recent typer vendors its own)
_CLICK_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def cli_errors(fn):
    """Turn library errors into one stderr line and the contract's exit code (docs/reference.md, "Exit codes")."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = os.environ.get("QACT_DEBUG") == "1"
        try:
            if "seed" in kwargs:  # one line before any work, not an OverflowError deep in torch
                from .utils import check_seed

                check_seed(kwargs["seed"])
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = lambda msg, *a, **k: _err(f"warning: {msg}")
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except QactError as e:
            if debug:
                raise
            _err(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            _err("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            if debug:
                raise
            _err("out of memory; lower --batch-size (or --limit)")
            raise typer.Exit(3) from None
        except OSError as e:
            if debug:
                raise
            _err(f"{e.strerror or e}: {e.filename or ''}; check the path and its permissions")
            raise typer.Exit(3) from None
        except (*_CLICK_ERRORS, typer.Abort, typer.Exit):
            raise  # Click's own usage errors keep exit 2
        except Exception as e:  # last resort: one line, never a raw traceback
            if debug:
                raise
            msg = " ".join(str(e).split())
            _err(f"internal error: {type(e).__name__}: {msg[:300]} (run with QACT_DEBUG=1 for the traceback, and report it)")
            raise typer.Exit(1) from None

    return wrapper


# ----------------------------------------------------------------------------------------------- train
@app.command(short_help="Train a model; keep its best checkpoint on validation.")
@cli_errors
def train(
    dataset: Annotated[str, typer.Option("--dataset", help="digits, cifar10, cifar100, tinyimagenet, npy:DIR, folder:DIR.")] = "",
    arch: Annotated[str, typer.Option("--arch", help="lenet, resnet18, vgg11, densenet, dinov2_vits14.")] = "",
    backbone: Annotated[Optional[str], typer.Option("--backbone", help="Fit a probe (--head) on this frozen backbone: a qact checkpoint, dinov2_vits14|vitb14|vitl14, a spec (torchvision:NAME, ...) or a model card.")] = None,
    out: Annotated[str, typer.Option("--out", help="Checkpoint to write (the best on validation).")] = "",
    act: Annotated[str, typer.Option("--act", help="relu|qact|prelu|selu.")] = "relu",
    loss: Annotated[str, typer.Option("--loss", help="ce|watershed (watershed adds the paper's loss on the embedding).")] = "ce",
    head: Annotated[str, typer.Option("--head", help="linear|quantile (the paper's quantile classifier)|quantile:VARIANT (docs/calibration.md).")] = "linear",
    calibrate: Annotated[Optional[str], typer.Option("--calibrate", help="temperature: fit one temperature on the validation split after training (Guo et al. 2017); eval reports calibrated metrics beside the raw ones.")] = None,
    epochs: Annotated[int, typer.Option("--epochs")] = 30,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    weights: Annotated[Optional[str], typer.Option("--weights", help="Frozen backbone weights: PATH|random for dinov2_*, the weights file of a --backbone spec.")] = None,
    probe_res: Annotated[int, typer.Option("--probe-res", help="dinov2_* only: input resolution, a multiple of 14 (112 is ~4x faster on CPU).")] = 224,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its last epoch.")] = False,
    placement: Annotated[str, typer.Option("--placement", help="QAct placement in resnet18: all|official.")] = "all",
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random crop (pad 4) and horizontal flip.")] = False,
    early_stop: Annotated[int, typer.Option("--early-stop", help="Stop after N epochs without a 0.001 validation gain.")] = 10,
    context_size: Annotated[Optional[int], typer.Option("--context-size", help="QAct: context sample size per channel.")] = None,
    sync_context: Annotated[bool, typer.Option("--sync-context/--no-sync-context", help="Under torchrun: QAct context and BatchNorm statistics from the global batch (all processes) or from each process's share.")] = True,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
):
    """Train a model with the paper's protocol and write its best checkpoint."""
    from . import distributed
    from .errors import UsageError
    from .training import TrainConfig, train as run_train
    from .ui import progress, stderr_console

    for flag, value in (("--dataset", dataset), ("--arch (or --backbone)", arch or backbone), ("--out", out)):
        if not value:
            raise UsageError(f"missing {flag}; see `qact train --help`")
    arch = arch or "probe"  # --backbone alone: a probe on it
    qact_opts = {"context_size": context_size} if context_size is not None else {}
    from .utils import check_output_file

    check_output_file(out, "--out")  # before any training
    cfg = TrainConfig(dataset=dataset, arch=arch, out=out, data_root=data_root, download=download, act=act, loss=loss,
                      head=head, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device, resume=resume,
                      augment=augment, placement=placement, early_stop=early_stop, workers=workers, weights=weights, probe_res=probe_res,
                      backbone=backbone, qact=qact_opts, sync_context=sync_context, calibrate=calibrate)
    distributed.setup(device)  # under torchrun: join the process group; rank 0 alone prints
    console = stderr_console()
    console.quiet = not distributed.is_main()
    with progress(console, "loss") as bar, distributed.guard("training"):
        task = bar.add_task(f"{arch}/{act} epoch 1", total=None, loss="")

        def on_step(step, steps, value):
            bar.update(task, completed=step, total=steps, loss=f"loss {value:.4f}")

        def on_epoch(row):
            bar.update(task, description=f"{arch}/{act} epoch {row['epoch'] + 1}", completed=0)
            console.print(f"epoch {row['epoch']:>3}  loss {row['loss']:.4f}  val acc {row['val_acc']:.4f}  lr {row['lr']:.2e}",
                          highlight=False)

        info = run_train(cfg, on_epoch=on_epoch, on_step=on_step, log=lambda s: console.print(s, highlight=False))
    if distributed.is_main():
        typer.echo(f"best validation accuracy {info['best_val_acc']:.4f} (epoch {info['best_epoch']}) -> {out}")


# ----------------------------------------------------------------------------------------------- eval
@app.command("eval", short_help="Accuracy and calibration on clean and corrupted data.")
@cli_errors
def eval_cmd(
    models: Annotated[Optional[list[str]], typer.Argument(metavar="MODEL", help="qact checkpoints, specs (torchvision:resnet18, timm:NAME, pkg.module:callable), model cards (.yaml).", show_default=False)] = None,
    dataset: EvalDatasetOpt = None,
    corruptions: CorruptionsOpt = "common",
    severities: SeveritiesOpt = None,
    batch_size: EvalBatchOpt = 256,
    context: ContextOpt = "batch",
    adapt: AdaptOpt = "none",
    limit: LimitOpt = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Write the result JSON to PATH (- for stdout).")] = None,
    per_corruption: Annotated[bool, typer.Option("--per-corruption", help="Also print every (corruption, severity) cell.")] = False,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Earlier result JSON: exit 1 on a regression.")] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", help="Allowed drop in accuracy / rise in ECE per severity.")] = 0.01,
    fail_under: Annotated[Optional[float], typer.Option("--fail-under", help="Exit 1 if the mean corruption accuracy is below F.")] = None,
    weights: WeightsOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    resize: ResizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    trust_model_file: TrustOpt = False,
    allow_data_change: Annotated[bool, typer.Option("--allow-data-change", help="--baseline: accept a baseline scored on other data (a new dataset version).")] = False,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
):
    """Evaluate models on clean and corrupted data: accuracy and calibration per severity."""
    from . import distributed
    from .errors import UsageError
    from .eval.gates import check_baseline_protocol, check_gates
    from .eval.options import EvalOptions
    from .eval.report import grid_table, named_root, print_table, summary_table
    from .eval.run import Hooks, plan, result_json, run_jobs, write_json
    from .ui import progress, stderr_console, stdout_console

    if not models:
        raise UsageError("no model given; usage: qact eval MODEL [MODEL...] --dataset NAME")
    if not dataset:
        raise UsageError("missing --dataset; see `qact eval --help`")
    opts = EvalOptions.from_values(dict(dataset=dataset, data_root=data_root, download=download, corruptions=corruptions,
                                        severities=severities, batch_size=batch_size, context=context, adapt=adapt,
                                        limit=limit, seed=seed, device=device, workers=workers, tolerance=tolerance,
                                        fail_under=fail_under), "the command line")
    jobs, backbone = plan(models, weights=weights, model_kwargs=model_kwargs, num_classes=num_classes,
                          input_size=input_size, resize=resize, mean=mean, std=std, class_names=class_names,
                          trust_model_file=trust_model_file)
    from .utils import check_output_file

    check_output_file(json_out, "--json")  # before any work
    if baseline:
        from .eval.gates import load_result

        load_result(baseline)  # a damaged baseline fails now, not after the evaluation

    def before(name, protocol):  # a baseline from another protocol fails before any image is read
        if baseline:
            check_baseline_protocol(baseline, name, protocol.to_json())

    distributed.setup(device)  # under torchrun: join the process group; rank 0 alone prints and writes
    main = distributed.is_main()
    err = stderr_console()
    err.quiet = not main
    with progress(err) as bar, distributed.guard("evaluation"):
        task = bar.add_task("eval", total=None)

        def on_start(name, n):
            bar.reset(task, total=n, description=Path(name).name)

        results = run_jobs(jobs, opts, Hooks(on_start=on_start, on_cell=lambda row: bar.advance(task), before=before),
                           backbone_weights=backbone)
    # tables and JSON come first: a CI job that fails a gate still has them
    out = err if json_out == "-" else stdout_console()
    out.quiet = not main
    for r in results:
        print_table(out, summary_table(r, named_root(data_root)))
        if per_corruption:
            print_table(out, grid_table(r, named_root(data_root)))
    if json_out and main:
        write_json(result_json(results), json_out)
    failures = (check_gates(results, baseline, tolerance, fail_under, allow_data_change)
                if (baseline or fail_under is not None) else [])
    if failures and not main:
        raise typer.Exit(CheckFailed.exit_code)  # same exit code on every rank, the message once
    if failures:
        for line in failures:
            _err(f"check failed: {line}")
        raise CheckFailed(f"{len(failures)} check(s) failed; the result is in the table above"
                          + (f" and in {json_out}" if json_out and json_out != "-" else ""))


# ----------------------------------------------------------------------------------------------- corrupt
@app.command(short_help="Write corrupted copies of a dataset (the -C layouts).")
@cli_errors
def corrupt(
    out: Annotated[str, typer.Option("--out", help="Output folder.")] = "",
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Any dataset of the registry.")] = None,
    split: Annotated[str, typer.Option("--split", help="test|train.")] = "test",
    input: Annotated[Optional[Path], typer.Option("--input", help="uint8 images (N, H, W, 3) or (N, H, W) in a .npy file.")] = None,
    labels: Annotated[Optional[Path], typer.Option("--labels", help="(N,) integer labels .npy for --input.")] = None,
    no_labels: Annotated[bool, typer.Option("--no-labels", help="--input without labels: the folder is marked unlabelled (eval then refuses to score accuracy on it).")] = False,
    corruptions: Annotated[str, typer.Option("--corruptions", help="common|extra|all|NAME,NAME...")] = "common",
    severities: Annotated[str, typer.Option("--severities", help="1-5 or 1,3,5.")] = "1-5",
    profile: Annotated[str, typer.Option("--profile", help="auto|cifar|tiny|imagenet (auto: by image size).")] = "auto",
    format: Annotated[str, typer.Option("--format", help="npy (CIFAR-10-C layout) | jpeg | png (ImageNet-C layout).")] = "npy",
    preview: Annotated[Optional[str], typer.Option("--preview", help="Write a grid PNG (corruptions x severities).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 256,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Corrupt N evenly spaced images of the input, in file order (as eval --limit); recorded in manifest.json.")] = None,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
):
    """Write corrupted copies of a dataset (CIFAR-10-C or ImageNet-C layout), seeded and resumable."""
    from .corruptions.job import run_corrupt

    run_corrupt(out=out, dataset=dataset, split=split, input=input, labels=labels, corruptions=corruptions,
                severities=severities, profile=profile, fmt=format, preview=preview, batch_size=batch_size,
                data_root=data_root, download=download, device=device, seed=seed, limit=limit, no_labels=no_labels)


# ----------------------------------------------------------------------------------------------- compare
def _register_compare_keys() -> None:
    # a compare config may describe a whole experiment (models to train), see qact_cli/compare/experiment.py
    from .compare.keys import EXPERIMENT_KEYS
    from .config import EXTRA_KEYS

    EXTRA_KEYS["compare"] = set(EXPERIMENT_KEYS)


_register_compare_keys()


@app.command(short_help="Put models side by side (no items: the quickstart).")
@cli_errors
def compare(
    ctx: typer.Context,
    items: Annotated[Optional[list[str]], typer.Argument(metavar="ITEM", help="Result JSONs or models (checkpoints, specs, cards: evaluated first).", show_default=False)] = None,
    dataset: EvalDatasetOpt = None,
    corruptions: CorruptionsOpt = "common",
    severities: SeveritiesOpt = None,
    batch_size: EvalBatchOpt = 256,
    context: ContextOpt = "batch",
    adapt: AdaptOpt = "none",
    limit: LimitOpt = None,
    json: Annotated[Optional[str], typer.Option("--json", help="Write the combined document (qact.eval-multi/1 with a 'comparison' key; - for stdout).")] = None,
    markdown: Annotated[Optional[str], typer.Option("--markdown", help="Write a GitHub-flavoured table (- for stdout).")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Write accuracy/ECE-vs-severity curves (PNG; the folder is created).")] = None,
    metrics: Annotated[Optional[str], typer.Option("--metrics", help="Metrics to show: acc,ece,ce,nll,brier (ce: Kumar et al.'s marginal calibration error, the paper's). Default: acc,ece.")] = None,
    allow_mixed: Annotated[bool, typer.Option("--allow-mixed", help="Compare results from different protocols (marked †).")] = False,
    out_dir: Annotated[Optional[str], typer.Option("--out-dir", help="Experiment folder: checkpoints/, results/, compare.{json,md,png} (quickstart: ./qact-quickstart).")] = None,
    weights: WeightsOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    num_classes: NumClassesOpt = None,
    input_size: InputSizeOpt = None,
    resize: ResizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    class_names: ClassNamesOpt = None,
    trust_model_file: TrustOpt = False,
    data_root: DataRootOpt = None,
    download: DownloadOpt = False,
    workers: WorkersOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    config: ConfigOpt = None,
):
    """Put models side by side; with no items, run the bundled quickstart experiment.

    ITEMs are result JSONs or models (checkpoints, specs, cards). A --config file may also list models
    to train first (see sample_configs/quickstart.yaml); existing checkpoints and results in --out-dir
    are reused.
    """
    from .compare.command import run_compare

    run_compare(ctx, dict(items=items, dataset=dataset, corruptions=corruptions, severities=severities,
                          batch_size=batch_size, context=context, adapt=adapt, limit=limit, json=json,
                          markdown=markdown, plot=plot, metrics=metrics, allow_mixed=allow_mixed, out_dir=out_dir,
                          weights=weights,
                          model_kwargs=model_kwargs, num_classes=num_classes, input_size=input_size, resize=resize,
                          mean=mean, std=std, class_names=class_names, trust_model_file=trust_model_file,
                          data_root=data_root, download=download, workers=workers, device=device, seed=seed,
                          config=config))


def _click_exceptions():
    """Click's exception classes: Typer >= 0.2x vendors Click as typer._click, older Typer uses Click."""
    try:
        from typer._click import exceptions
    except ImportError:
        from click import exceptions
    return exceptions


def _usage_line(e) -> str:
    """Click's boxed usage error as one line: the message, then where to read more."""
    msg = " ".join(line.strip() for line in e.format_message().splitlines() if line.strip())
    msg = msg[0].lower() + msg[1:] if msg[:1].isupper() and not msg[1:2].isupper() else msg
    if e.ctx is not None:
        where = e.ctx.command_path
    else:  # an option that failed to parse has no context yet: name the command from the command line
        names = {c.name for c in app.registered_commands} | {c.callback.__name__ for c in app.registered_commands}
        sub = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        where = f"qact {sub}" if sub in names else "qact"
    return f"{msg.rstrip('.')} (see `{where} --help`)"


def main() -> None:
    """The console script: run the app with Click's standalone handling off, so that every error is
    one `qact: ...` line on stderr with the documented exit code (2 usage, 130 interrupted)."""
    from .utils import tune_allocator

    tune_allocator()
    errors = _click_exceptions()
    try:
        code = app(prog_name="qact", standalone_mode=False)
    except getattr(errors, "NoArgsIsHelpError", ()) as e:  # bare `qact`: the help, as --help shows it
        typer.echo(e.ctx.get_help())
        code = 0
    except errors.UsageError as e:  # BadParameter, NoSuchOption, MissingParameter, no such command...
        _err(_usage_line(e))
        code = e.exit_code
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        _err("interrupted")
        code = 130
    except errors.ClickException as e:
        _err(e.format_message())
        code = e.exit_code
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
