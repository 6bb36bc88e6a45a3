"""When two results measure the same thing: the one rule behind `--baseline` (gates.py), `qact compare`
(compare/table.py) and the reuse of a stored result (run.py).

Two results are comparable when they scored the same data and cells under the same test-time
choices: the dataset, the PROTOCOL_KEYS, the seed, random streams and corruption kernels where they decide the
images (generated sets, `gen:NAME`), and by default the model's number of classes (the probability space of ECE, NLL and
Brier, and the chance level of the accuracy). The model itself may differ: that is what is compared.
"""

from __future__ import annotations

from collections.abc import Collection

from ..native import recorded

# protocol fields that must match for two results to be comparable (eval --baseline; docs/reference.md)
PROTOCOL_KEYS = ("corruptions", "severities", "batch_size", "context", "adapt", "limit")


def _value(protocol: dict, key: str):
    return recorded(protocol) if key == "kernels" else protocol.get(key)


def protocol_differences(a: dict, b: dict, ignore: Collection[str] = (), model_classes: bool = True,
                         data: bool = False, exact: bool = False) -> list[str]:
    """What differs between the protocols of results `a` and `b`, as "KEY A vs B" (empty: comparable).

    `ignore`: protocol keys a model set on purpose (compare's per-model overrides). `data`: the images'
    content fingerprint too (`protocol.data`; a result without one is taken as it is, unless `exact`).
    `exact`: every recorded protocol key, the seed always (a stored result is reused only then)."""
    pa, pb = a["protocol"], b["protocol"]
    if exact:
        keys = [k for k in dict.fromkeys([*pa, *pb]) if k != "data"]
    else:  # the seed decides the images only where they are generated (gen:NAME)
        generated = any(str(r["dataset"]).startswith("gen:") for r in (a, b))
        keys = list(PROTOCOL_KEYS) + (["seed", "streams", "kernels"] if generated else [])
    diffs = [] if a["dataset"] == b["dataset"] else [f"dataset {a['dataset']} vs {b['dataset']}"]
    diffs += [f"{k} {_value(pa, k)} vs {_value(pb, k)}" for k in keys
              if k not in ignore and _value(pa, k) != _value(pb, k)]
    ka, kb = ((r.get("model") or {}).get("num_classes") for r in (a, b))
    if model_classes and ka is not None and kb is not None and ka != kb:
        diffs.append(f"model classes {ka} vs {kb}")
    da, db = pa.get("data"), pb.get("data")
    if exact and da != db:
        diffs.append(f"data {(da or {}).get('fingerprint')} vs {(db or {}).get('fingerprint')}")
    elif data and isinstance(da, dict) and isinstance(db, dict) and da.get("fingerprint") and db.get("fingerprint") \
            and da["fingerprint"] != db["fingerprint"]:
        diffs.append(f"data {da['fingerprint']} vs {db['fingerprint']}")
    return diffs
