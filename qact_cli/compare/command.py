"""`qact compare` behind the CLI: pick the mode (items, a config experiment, the bundled quickstart),
run it with progress on stderr, print the table, write the JSON / Markdown / plot."""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import typer

from ..errors import UsageError
from ..eval.options import EvalOptions
from ..options.model import MODEL_FIELDS
from .experiment import Experiment, QUICKSTART_OUT, parse_experiment, quickstart_path
from .experiment_keys import EXPERIMENT_KEYS

# parameter sources (click's ParameterSource names) that mean "the user gave this value"
EXPLICIT = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
# compare's eval options: those of `qact eval` but its CI gates
EVAL_FIELDS = tuple(f.name for f in fields(EvalOptions) if f.name not in EvalOptions.GATES)


def _cast(name: str, value, path: Path):
    """A value of the bundled file as the option's type (the CLI converts flags itself)."""
    from ..options.schema import coerce
    from ..options.report import COMPARE_REPORTS, ReportOutputs
    from .options import CompareOutputs

    schema = (EvalOptions if name in EVAL_FIELDS else ReportOutputs if name in COMPARE_REPORTS
              else CompareOutputs if name in CompareOutputs.OUTPUTS + CompareOutputs.SHOWN else None)
    return coerce(schema, name, value, str(path)) if schema else value


def apply_bundled_config(ctx: typer.Context, params: dict, path: Path) -> dict:
    """Use `path`'s option values where the command line gave none (as --config would). Returns its extra keys."""
    from ..config_file import read_yaml

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


def _check_outputs(run: "Run") -> None:
    if run.json_out == "-" and run.markdown == "-":
        raise UsageError("--json - and --markdown - both want stdout; write one of them to a file")
    from ..report.outputs import check_report_outputs
    from ..utils import check_output_file

    for flag, path in (("--json", run.json_out), ("--markdown", run.markdown)):
        check_output_file(path, flag)  # before any evaluation or training
    check_report_outputs(run.html, run.latex, run.plot)


@dataclass
class Run:
    """What one `qact compare` does: the items, the experiment (or None) and where it writes."""

    items: list
    experiment: Experiment | None
    where: str
    quickstart: bool
    json_out: str | None
    markdown: str | None
    plot: str | None
    html: str | None = None
    latex: str | None = None
    out_dir: Path | None = None


def run_compare(ctx: typer.Context, params: dict) -> None:
    run = plan_run(ctx, params)
    opts = EvalOptions.from_values({k: params.get(k) for k in EVAL_FIELDS}, run.where or "the command line")
    from ..eval.report import named_root
    from . import table as tbl

    metrics = tbl.parse_metrics(params.get("metrics"))
    from .. import distributed

    distributed.setup(opts.device)  # under torchrun: every rank evaluates its share; rank 0 alone prints and writes
    t0 = time.time()
    entries = collect_entries(run, opts, {k: params.get(k) for k in MODEL_FIELDS})
    tbl.unique_names(entries)
    tbl.check_protocols(entries, allow_mixed=bool(params.get("allow_mixed")))
    cmp = tbl.build(entries, metrics, data_root=named_root(params.get("data_root")))
    if distributed.is_main():
        write_outputs(run, cmp)
        if run.experiment is not None:
            from ..ui import stderr_console

            stderr_console().print(f"done in {time.time() - t0:.0f} s", highlight=False)


def plan_run(ctx: typer.Context, params: dict) -> Run:
    """The mode (items, a config experiment, the bundled quickstart) and the outputs, checked before any work."""
    items = list(params.get("items") or [])
    extra = dict(ctx.meta.get("config_extra") or {})
    where = str(params.get("config") or "")
    quickstart = not items and params.get("config") is None
    if quickstart:
        where = str(quickstart_path())
        extra = apply_bundled_config(ctx, params, Path(where))
    experiment = parse_experiment(extra, where) if extra.get("models") else None
    if experiment is None and not items:
        raise UsageError(f"nothing to compare: {where} lists no models; pass result JSONs / checkpoints, "
                         "or a config with a `models:` list")
    if experiment is None and "train" in extra:
        raise UsageError(f"{where} has a `train:` block but no `models:` list to use it")
    run = Run(items, experiment, where, quickstart, params.get("json"), params.get("markdown"), params.get("plot"),
              params.get("html"), params.get("latex"))
    if experiment is not None:  # an experiment writes everything into its folder unless told otherwise
        run.out_dir = Path(params.get("out_dir") or (QUICKSTART_OUT if quickstart else f"qact-{Path(where).stem}"))
        run.json_out = run.json_out or str(run.out_dir / "compare.json")
        run.markdown = run.markdown or str(run.out_dir / "compare.md")
        run.plot = run.plot or str(run.out_dir / "compare.png")
        run.html = run.html or str(run.out_dir / "compare.html")
    _check_outputs(run)
    return run


def collect_entries(run: Run, opts: EvalOptions, model_flags: dict) -> list:
    """Train what the experiment lacks, evaluate every model, read every result: one entry per column."""
    from .. import distributed
    from ..eval.run import Hooks as EvalHooks
    from ..ui import progress, stderr_console
    from .experiment import Hooks, run_experiment
    from .item_entries import load_items

    err = stderr_console()
    err.quiet = not distributed.is_main()
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

        if run.experiment is not None:
            title = run.experiment.title or Path(run.where).stem
            log(f"experiment: {title} ({run.where}); outputs in {run.out_dir}/")
            entries += run_experiment(run.experiment, opts, run.out_dir,
                                      Hooks(log=log, train=train_with_progress, on_start=on_start, on_cell=on_cell))
        if run.items:
            entries += load_items(run.items, opts, model_flags, EvalHooks(on_start=on_start, on_cell=on_cell, log=log))
    return entries


def write_outputs(run: Run, cmp) -> None:
    """The table on stdout (stderr when a document goes to stdout), then the JSON, Markdown, HTML,
    LaTeX and plot files (the reports render the same document as the JSON)."""
    from ..ui import stderr_console
    from . import table as tbl

    tbl.print_comparison(cmp, to_stderr="-" in (run.json_out, run.markdown))
    written = []
    doc = tbl.document(cmp)
    if run.experiment is not None:
        doc["comparison"]["experiment"] = {"title": run.experiment.title, "config": run.where,
                                           "out_dir": str(run.out_dir)}
    if run.json_out:
        from ..eval.run import write_json

        write_json(doc, run.json_out)
        written.append(run.json_out)
    if run.markdown:
        text = tbl.markdown(cmp)
        if run.markdown == "-":
            typer.echo(text, nl=False)
        else:
            from ..utils import write_text_atomic

            write_text_atomic(Path(run.markdown), text)
            written.append(run.markdown)
    if run.html or run.latex or run.plot:
        from ..report.outputs import write_reports

        written += write_reports(doc, cmp, html=run.html, latex=run.latex, plot=run.plot)
    files = [w for w in written if w != "-"]
    if files:
        stderr_console().print(f"wrote {', '.join(files)}", highlight=False, soft_wrap=True)
