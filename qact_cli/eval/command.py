"""`qact eval` behind the CLI: the options from the command line, the evaluation with progress on
stderr, the tables, the JSON and the CI checks (exit 1 on a failed one)."""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckFailed, UsageError
from ..options.model import MODEL_FIELDS
from ..options.schema import pick
from ..options.report import ReportOutputs
from ..selection import check_selection
from .options import EvalOptions, EvalOutputs


def run_eval(values: dict) -> None:
    """`values`: the command's parameters (qact_cli/cli.py generates them from the schemas)."""
    out = EvalOutputs(**pick(EvalOutputs, values))
    report = ReportOutputs(**pick(ReportOutputs, values))
    if not out.models:
        raise UsageError("no model given; usage: qact eval MODEL [MODEL...] --dataset NAME")
    if not values.get("dataset"):
        raise UsageError("missing --dataset; see `qact eval --help`")
    opts = EvalOptions.from_values(pick(EvalOptions, values), "the command line")
    check_selection(opts.dataset, opts.corruptions, opts.severities)  # a misspelt name answers at once
    from .run import plan

    jobs, backbone = plan(out.models, **{k: values[k] for k in MODEL_FIELDS})
    from ..report.outputs import check_report_outputs
    from ..utils import check_output_file

    check_output_file(out.json_out, "--json")  # before any work
    check_report_outputs(html=report.html, plot=report.plot)
    if out.baseline:
        from .gates import load_result

        load_result(out.baseline)  # a damaged baseline fails now, not after the evaluation
    results = _evaluate(jobs, opts, out, backbone)
    _report(results, opts, out, report)


def _evaluate(jobs, opts: EvalOptions, out: EvalOutputs, backbone) -> list[dict]:
    from .. import distributed
    from ..ui import progress, stderr_console
    from .gates import check_baseline_protocol
    from .run import Hooks, run_jobs

    def before(name, protocol):  # a baseline from another protocol fails before any image is read
        if out.baseline:
            check_baseline_protocol(out.baseline, name, protocol.to_json())

    distributed.setup(opts.device)  # under torchrun: join the process group; rank 0 alone prints and writes
    err = stderr_console()
    err.quiet = not distributed.is_main()
    with progress(err) as bar, distributed.guard("evaluation"):
        task = bar.add_task("eval", total=None)

        def on_start(name, n):
            bar.reset(task, total=n, description=Path(name).name)

        return run_jobs(jobs, opts, Hooks(on_start=on_start, on_cell=lambda row: bar.advance(task), before=before),
                        backbone_weights=backbone)


def _report(results: list[dict], opts: EvalOptions, out: EvalOutputs, report: ReportOutputs) -> None:
    """Tables and JSON first (a CI job that fails a gate still has them), then the checks."""
    import typer

    from .. import distributed
    from ..ui import stderr_console, stdout_console
    from .gates import check_gates
    from .report import grid_table, named_root, print_table, summary_table
    from .run import result_json, write_json

    main = distributed.is_main()
    console = stderr_console() if out.json_out == "-" else stdout_console()
    console.quiet = not main
    for r in results:
        print_table(console, summary_table(r, named_root(opts.data_root)))
        if out.per_corruption:
            print_table(console, grid_table(r, named_root(opts.data_root)))
    if out.json_out and main:
        write_json(result_json(results), out.json_out)
    if (report.html or report.plot) and main:
        from ..report.outputs import write_reports

        written = write_reports(result_json(results), html=report.html, plot=report.plot)
        stderr_console().print(f"wrote {', '.join(written)}", highlight=False, soft_wrap=True)
    failures = (check_gates(results, out.baseline, opts.tolerance, opts.fail_under, out.allow_data_change)
                if (out.baseline or opts.fail_under is not None) else [])
    if failures and not main:
        raise typer.Exit(CheckFailed.exit_code)  # same exit code on every rank, the message once
    if failures:
        for line in failures:
            typer.echo(f"qact: check failed: {line}", err=True)
        raise CheckFailed(f"{len(failures)} check(s) failed; the result is in the table above"
                          + (f" and in {out.json_out}" if out.json_out and out.json_out != "-" else ""))
