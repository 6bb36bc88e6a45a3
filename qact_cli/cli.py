"""The `qact` command line: parse options, call the library, print. The work lives in the modules."""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
from typing import Annotated

import typer

from .compare.experiment_keys import EXPERIMENT_KEYS
from .compare.options import CompareOutputs
from .config_file import EXTRA_KEYS
from .errors import QactError
from .eval.options import EvalOptions, EvalOutputs
from .options.corrupt import CORRUPT_FLAGS, CORRUPT_RUN, CorruptOptions
from .options.model import ModelOptions
from .options.report import COMPARE_REPORTS, EVAL_REPORTS, ReportOutputs
from .options.run import RUN, ConfigFile, RunOptions
from .options.schema import command, pick
from .options.train import TRAIN_FLAGS, TrainConfig

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

# compare reads which values came from the command line (a bundled config fills in the others)
CONTEXT = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)


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
                from .startup import check_seed

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


# ----------------------------------------------------------------------------------------------- commands
# Each command's options are generated from the schemas that declare them (qact_cli/options/schema.py).
@app.command(short_help="Train a model; keep its best checkpoint on validation.")
@cli_errors
@command((TrainConfig, TRAIN_FLAGS), (RunOptions, RUN), ConfigFile)
def train(**values):
    """Train a model with the paper's protocol and write its best checkpoint."""
    from .train_command import run_train

    run_train(values)


@app.command("eval", short_help="Accuracy and calibration on clean and corrupted data.")
@cli_errors
@command((EvalOutputs, ("models",)), (EvalOptions, EvalOptions.PROTOCOL), (EvalOutputs, ("json_out",)),
         (ReportOutputs, EVAL_REPORTS), (EvalOutputs, ("per_corruption", "baseline")), (EvalOptions, EvalOptions.GATES),
         ModelOptions, (EvalOutputs, ("allow_data_change",)), (RunOptions, RUN), ConfigFile)
def eval_cmd(**values):
    """Evaluate models on clean and corrupted data: accuracy and calibration per severity."""
    from .eval.command import run_eval

    run_eval(values)


@app.command(short_help="Write corrupted copies of a dataset (the -C layouts).")
@cli_errors
@command((CorruptOptions, CORRUPT_FLAGS), (RunOptions, CORRUPT_RUN), ConfigFile)
def corrupt(**values):
    """Write corrupted copies of a dataset (CIFAR-10-C or ImageNet-C layout), seeded and resumable."""
    opts = CorruptOptions(**pick(CorruptOptions, values))
    opts.check()  # a usage error answers before the corruption code (torch) is imported
    from .corruptions.corrupt_dataset import run_corrupt

    run_corrupt(opts)


# a compare config may describe a whole experiment (models to train), see qact_cli/compare/experiment.py
EXTRA_KEYS["compare"] = set(EXPERIMENT_KEYS)


@app.command(short_help="Put models side by side (no items: the quickstart).")
@cli_errors
@command((CompareOutputs, ("items",)), (EvalOptions, EvalOptions.PROTOCOL), (CompareOutputs, CompareOutputs.OUTPUTS),
         (ReportOutputs, COMPARE_REPORTS), (CompareOutputs, CompareOutputs.SHOWN),
         ModelOptions, (RunOptions, RUN), ConfigFile, leading=(CONTEXT,))
def compare(ctx: typer.Context, **values):
    """Put models side by side; with no items, run the bundled quickstart experiment.

    ITEMs are result JSONs or models (checkpoints, specs, cards). A --config file may also list models
    to train first (see sample_configs/quickstart.yaml); existing checkpoints and results in --out-dir
    are reused.
    """
    from .compare.command import run_compare

    run_compare(ctx, values)


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
    from .startup import tune_allocator

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
