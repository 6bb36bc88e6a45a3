"""`qact compare` behind the CLI: pick the mode (items, a config experiment, the bundled quickstart),
run it with progress on stderr, print the table, write the JSON / Markdown / plot."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import typer

from ..errors import UsageError
from ..eval.options import MODEL_FIELDS, EvalOptions
from .keys import EXPERIMENT_KEYS

# parameter sources (click's ParameterSource names) that mean "the user gave this value"
EXPLICIT = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
# compare's eval options: those of `qact eval` but its CI gates
EVAL_FIELDS = tuple(f.name for f in fields(EvalOptions) if f.name not in ("tolerance", "fail_under"))


def _cast(name: str, value, path: Path):
    """A value of the bundled file as the option's type (the CLI converts flags itself)."""
    from ..eval.options import coerce

    if name == "allow_mixed":
        if isinstance(value, bool):
            return value
        raise UsageError(f"allow-mixed in {path} must be true or false, got {value!r}")
    return coerce(name, value, str(path))


def apply_bundled_config(ctx: typer.Context, params: dict, path: Path) -> dict:
    """Use `path`'s option values where the command line gave none (as --config would). Returns its extra keys."""
    from ..config import read_yaml

    data = read_yaml(path)
    by_name = {p.name: p for p in ctx.command.params if p.name and p.name != "config"}
    extra = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name in EXPERIMENT_KEYS:
            extra[name] = value
        elif name in by_name:
            if getattr(ctx.get_parameter_source(name), "name", None) not in EXPLICIT:
                params[name] = value if name == "items" else _cast(name, value, path)
        else:
            raise UsageError(f"unknown key {key!r} in {path}")
    return extra


def _check_outputs(json_out: str | None, markdown: str | None, plot: str | None) -> None:
    if json_out == "-" and markdown == "-":
        raise UsageError("--json - and --markdown - both want stdout; write one of them to a file")
    if plot == "-":
        raise UsageError("--plot needs a file path (PNG), not -")
    from ..utils import check_output_file

    for flag, path in (("--json", json_out), ("--markdown", markdown), ("--plot", plot)):
        check_output_file(path, flag)  # before any evaluation or training
    if plot:
        from .plot import plot_format

        plot_format(plot)


def run_compare(ctx: typer.Context, params: dict) -> None:
    from ..eval.report import named_root
    from ..ui import progress, stderr_console
    from . import table as tbl
    from ..eval.run import Hooks as EvalHooks
    from .experiment import Experiment, Hooks, QUICKSTART_OUT, parse_experiment, quickstart_path, run_experiment
    from .items import load_items

    items = list(params.get("items") or [])
    extra = dict(ctx.meta.get("config_extra") or {})
    where = str(params.get("config") or "")
    quickstart = not items and params.get("config") is None
    if quickstart:
        where = str(quickstart_path())
        extra = apply_bundled_config(ctx, params, Path(where))
    experiment: Experiment | None = parse_experiment(extra, where) if extra.get("models") else None
    if experiment is None and not items:
        raise UsageError(f"nothing to compare: {where} lists no models; pass result JSONs / checkpoints, "
                         "or a config with a `models:` list")
    if experiment is None and "train" in extra:
        raise UsageError(f"{where} has a `train:` block but no `models:` list to use it")

    json_out, markdown, plot = params.get("json"), params.get("markdown"), params.get("plot")
    out_dir = None
    if experiment is not None:  # an experiment writes everything into its folder unless told otherwise
        out_dir = Path(params.get("out_dir") or (QUICKSTART_OUT if quickstart else f"qact-{Path(where).stem}"))
        json_out = json_out or str(out_dir / "compare.json")
        markdown = markdown or str(out_dir / "compare.md")
        plot = plot or str(out_dir / "compare.png")
    _check_outputs(json_out, markdown, plot)
    opts = EvalOptions.from_values({k: params.get(k) for k in EVAL_FIELDS}, where or "the command line")
    model_flags = {k: params.get(k) for k in MODEL_FIELDS}
    metrics = tbl.parse_metrics(params.get("metrics"))

    from .. import distributed

    distributed.setup(opts.device)  # under torchrun: every rank evaluates its share; rank 0 alone prints and writes
    main = distributed.is_main()
    err = stderr_console()
    err.quiet = not main
    t0 = time.time()
    entries = []
    with progress(err, "info") as bar, distributed.guard("comparison"):
        task = bar.add_task("", total=None, info="", visible=False)

        def log(line: str) -> None:
            bar.console.print(line, highlight=False, markup=False, soft_wrap=True)

        def train_with_progress(cfg, name):
            from ..training import train

            bar.reset(task, total=None, description=f"{name} epoch 1", info="", visible=True)

            def on_step(step, steps, value):
                bar.update(task, completed=step, total=steps, info=f"loss {value:.4f}")

            def on_epoch(row):
                bar.reset(task, total=None, description=f"{name} epoch {row['epoch'] + 1}", info="")
                log(f"  epoch {row['epoch']:>3}  loss {row['loss']:.4f}  val acc {row['val_acc']:.4f}")

            return train(cfg, on_epoch=on_epoch, on_step=on_step, log=lambda s: log("  " + s))

        def on_start(name, n):
            log(f"evaluating {name} on {n} cells of {opts.dataset}")
            bar.reset(task, total=n, description=f"eval {name}", info="", visible=True)

        def on_cell(row):
            bar.update(task, advance=1, info=f"{row['corruption']} s{row['severity']}")

        if experiment is not None:
            title = experiment.title or Path(where).stem
            log(f"experiment: {title} ({where}); outputs in {out_dir}/")
            entries += run_experiment(experiment, opts, out_dir,
                                      Hooks(log=log, train=train_with_progress, on_start=on_start, on_cell=on_cell))
        if items:
            entries += load_items(items, opts, model_flags, EvalHooks(on_start=on_start, on_cell=on_cell, log=log))

    tbl.unique_names(entries)
    tbl.check_protocols(entries, allow_mixed=bool(params.get("allow_mixed")))
    cmp = tbl.build(entries, metrics, data_root=named_root(params.get("data_root")))
    if not main:
        return
    tbl.print_comparison(cmp, to_stderr="-" in (json_out, markdown))
    written = []
    if json_out:
        from ..eval.run import write_json

        doc = tbl.document(cmp)
        if experiment is not None:
            doc["comparison"]["experiment"] = {"title": experiment.title, "config": where, "out_dir": str(out_dir)}
        write_json(doc, json_out)
        written.append(json_out)
    if markdown:
        text = tbl.markdown(cmp)
        if markdown == "-":
            typer.echo(text, nl=False)
        else:
            from ..utils import write_text_atomic

            write_text_atomic(Path(markdown), text)
            written.append(markdown)
    if plot:
        from .plot import plot_curves

        plot_curves(cmp, plot)
        written.append(plot)
    files = [w for w in written if w != "-"]
    if files:
        err.print(f"wrote {', '.join(files)}", highlight=False, soft_wrap=True)
    if experiment is not None:
        err.print(f"done in {time.time() - t0:.0f} s", highlight=False)
