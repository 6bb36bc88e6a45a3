"""Each command-line option is declared once, as a schema field (qact_cli/options/schema.py), and the
commands list the options they listed before the schemas; `--help` and usage errors never import torch."""

import dataclasses
import subprocess
import sys

import pytest
from typer.main import get_command

from qact_cli.cli import app
from qact_cli.options.schema import flag_fields, param_name

# `qact COMMAND --help`'s parameters, in order, as main listed them before the schemas (commit f75b04a)
BEFORE = {
    "train": ["--dataset", "--arch", "--backbone", "--out", "--act", "--loss", "--head", "--calibrate", "--epochs",
              "--batch-size", "--lr", "--weights", "--probe-res", "--resume", "--placement", "--augment/--no-augment",
              "--early-stop", "--context-size", "--sync-context/--no-sync-context", "--data-root", "--download",
              "--workers", "--device", "--seed", "--config"],
    "eval": ["MODEL", "--dataset", "--corruptions", "--severities", "--batch-size", "--context", "--adapt", "--limit",
             "--json", "--html", "--plot", "--per-corruption", "--baseline", "--tolerance", "--fail-under", "--weights", "--model-kwargs",
             "--num-classes", "--input-size", "--resize", "--mean", "--std", "--class-names", "--outputs", "--channels",
             "--trust-model-file", "--allow-data-change", "--data-root", "--download", "--workers", "--device", "--seed", "--config"],
    "compare": ["ITEM", "--dataset", "--corruptions", "--severities", "--batch-size", "--context", "--adapt",
                "--limit", "--json", "--markdown", "--html", "--latex", "--plot", "--metrics", "--allow-mixed", "--out-dir", "--weights",
                "--model-kwargs", "--num-classes", "--input-size", "--resize", "--mean", "--std", "--class-names",
                "--outputs", "--channels", "--trust-model-file", "--data-root", "--download", "--workers", "--device", "--seed", "--config"],
    "corrupt": ["--out", "--dataset", "--split", "--input", "--labels", "--no-labels", "--corruptions", "--severities",
                "--profile", "--format", "--preview", "--batch-size", "--limit", "--data-root", "--download",
                "--device", "--seed", "--config"],
}
# flags that two command families declare, each for its own command (other help, default or meaning)
PER_FAMILY = {
    "--dataset": "the data to train on / to evaluate / to corrupt",
    "--batch-size": "train 128, eval 256, corrupt 256 (no shared default)",
    "--out": "train's checkpoint file, corrupt's output folder",
    "--weights": "train: a frozen backbone's weights; eval/compare: the external model's",
    "--limit": "eval: images per cell; corrupt: images of the input",
    "--severities": "eval: 0-5 with 0 the clean split; corrupt: 1-5",
    "--corruptions": "the corruptions to evaluate on / to write",
    "--json": "eval: one result document; compare: the comparison document",
}


def _shown(p) -> str:
    if p.param_type_name == "argument":
        return p.metavar
    return "/".join([p.opts[0], *getattr(p, "secondary_opts", [])])


def _fields(name):
    """(schema, field) of every parameter the command's layout generates, in order."""
    info = next(c for c in app.registered_commands if (c.name or c.callback.__name__) == name)
    out = []
    for part in info.callback.layout:
        schema, names = part if isinstance(part, tuple) else (part, None)
        out += [(schema, f) for f in flag_fields(schema, names)]
    return out


def _schemas():
    return {schema for name in BEFORE for schema, _ in _fields(name)}


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_commands_list_the_options_they_listed_before(name):
    params = [p for p in get_command(app).commands[name].params if p.name != "ctx"]
    assert [_shown(p) for p in params] == BEFORE[name]
    assert [p.name for p in get_command(app).params] == ["version"]
    assert sorted(get_command(app).commands) == sorted(BEFORE)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_every_option_comes_from_exactly_one_schema_field(name):
    fields = _fields(name)
    params = [p for p in get_command(app).commands[name].params if p.name != "ctx"]
    assert [param_name(f) for _, f in fields] == [p.name for p in params]
    for (schema, f), p in zip(fields, params):
        spec = f.metadata["flag"]
        assert p.help == spec.help, (name, p.name)
        assert _shown(p) == spec.decl, (name, p.name)
    decls = [f.metadata["flag"].decl for _, f in fields]
    assert len(decls) == len(set(decls)), f"{name} declares a flag twice"


def test_no_flag_has_two_declarations_in_one_family_or_an_undeclared_second_meaning():
    declared = {}  # a field a schema inherits (RunOptions') is the same declaration
    for schema in sorted(_schemas(), key=lambda s: len(s.__mro__)):
        for f in flag_fields(schema):
            declared.setdefault(id(f), (f, f"{schema.__name__}.{f.name}"))
    by_flag = {}
    for f, where in declared.values():
        by_flag.setdefault(f.metadata["flag"].flag, []).append(where)
    shared = {flag: where for flag, where in by_flag.items() if len(where) > 1}
    assert set(shared) <= set(PER_FAMILY), shared
    for flag, where in shared.items():  # never twice in one schema family (eval/compare share EvalOptions)
        assert len({w.split(".")[0] for w in where}) == len(where), (flag, where)


def test_python_keywords_and_config_keys_come_from_the_same_schemas():
    import inspect

    import qact_cli
    from qact_cli.eval.options import EvalOptions
    from qact_cli.options.model import MODEL_FIELDS
    from qact_cli.options.train import TrainConfig
    from qact_cli.schedule import LR, LR_PATIENCE

    keywords = list(inspect.signature(qact_cli.evaluate).parameters)[4:]
    assert set(keywords) == {f.name for f in dataclasses.fields(EvalOptions)} - {"dataset", *EvalOptions.GATES} | set(MODEL_FIELDS)
    with pytest.raises(qact_cli.api.UsageError, match="unknown keyword 'fail_under'"):
        qact_cli.evaluate("x", dataset="digits", fail_under=0.5)
    assert (TrainConfig.__dataclass_fields__["lr"].default, TrainConfig.__dataclass_fields__["lr_patience"].default) == (LR, LR_PATIENCE)


def test_torch_free_name_tables_equal_the_corruption_code():
    from qact_cli import corruptions, selection
    from qact_cli.corruptions.checks import FORMATS
    from qact_cli.corruptions.profiles import PROFILES
    from qact_cli.options import corrupt

    assert (selection.COMMON_NAMES, selection.EXTRA_NAMES) == (corruptions.COMMON, corruptions.EXTRA)
    assert (corrupt.FORMATS, corrupt.PROFILES) == (FORMATS, ("auto", *PROFILES))


def test_datasets_with_corruption_names_of_their_own_are_known_without_torch():
    # eval checks --corruptions before importing torch except on the datasets of selection.OWN_NAMES; a
    # dataset class that lists its own names must be one of them, or hold a subset of the 19 (corrupted:DIR)
    from qact_cli import selection
    from qact_cli.data import corrupt_folder, corrupted
    from qact_cli.data.clean import Dataset

    def subclasses(cls):
        return {cls} | {s for c in cls.__subclasses__() for s in subclasses(c)}

    own = {c for c in subclasses(Dataset) if hasattr(c, "corruption_names")}
    folder = {c for c in own if c.__module__ == corrupt_folder.__name__}
    assert own - folder == {corrupted.MnistC} and selection.OWN_NAMES == ("mnistc",)


HELP_CALLS = [["--help"], ["-h"], *([c, "--help"] for c in sorted(BEFORE)), ["eval", "-h"],
              ["corrupt", "--out", "o", "--bogus"], ["corrupt", "--out", "o", "--severities", "9"],
              ["corrupt", "--out", "o", "--corruptions", "gausian_noise"], ["corrupt", "--out", "o", "--format", "jpg"],
              ["eval", "m.pt", "--dataset", "gen:digits", "--corruptions", "fgo"],
              ["eval", "m.pt", "--dataset", "cifar10c", "--severities", "9"]]


@pytest.mark.parametrize("args", HELP_CALLS, ids=" ".join)
def test_help_and_usage_errors_do_not_import_torch(args):
    code = ("import sys\nsys.argv = ['qact', *%r]\nfrom qact_cli.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print('exit', e.code)\nprint('torch' in sys.modules)" % (args,))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    *_, status, torch_loaded = r.stdout.split()[-3:]
    assert torch_loaded == "False", (args, r.stderr[-500:])
    assert r.stdout.split()[-2] in ("0", "2")
