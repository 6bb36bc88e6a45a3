import json

import yaml


def test_config_file_and_precedence(cli, digits_ckpt, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": "digits", "batch-size": 50, "limit": 40, "severities": [0]}))
    code, out, err = cli("eval", digits_ckpt, "--config", cfg, "--json", "-")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["protocol"]["batch_size"] == 50 and doc["protocol"]["limit"] == 40
    # the command line overrides the file
    code, out, err = cli("eval", digits_ckpt, "--config", cfg, "--batch-size", "20", "--json", "-")
    assert code == 0 and json.loads(out)["protocol"]["batch_size"] == 20


def test_unknown_config_key_is_usage_error(cli, digits_ckpt, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: digits\nbatchsize: 3\n")
    code, out, err = cli("eval", digits_ckpt, "--config", cfg)
    assert code == 2 and "batchsize" in err


def test_malformed_config(cli, digits_ckpt, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("dataset: [digits\n")
    code, _, err = cli("eval", digits_ckpt, "--config", cfg)
    assert code == 2 and "not valid YAML" in err
