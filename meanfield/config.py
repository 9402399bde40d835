"""Run configuration: a TOML file with documented sections, defaults and validation.

Every key has a default, a type and an allowed range; unknown keys, wrong types and
out-of-range values raise :class:`~meanfield.theory.errors.InputError` naming ``section.key``
before anything is computed. ``resolve`` returns a nested dict with every key filled in;
``dumps`` writes it back as TOML (the text stored in every output file).
"""

from __future__ import annotations

import copy
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from meanfield.schema import NUM, Key, ge, ge_or_inf, gt, is_matrix, number_or_inf
from meanfield.theory.errors import InputError


def _drift_keys() -> dict[str, Key]:
    """[drift]: the parameters of every registered drift that [model] does not hold."""
    from solvers.drifts import DRIFTS

    out: dict[str, Key] = {}
    for name, cls in DRIFTS.items():
        for key, (default, doc) in cls.PARAMETERS.items():
            if key in CORE["model"] or key in out:
                continue
            kind = NUM if isinstance(default, (int, float)) and not isinstance(default, bool) \
                else type(default)
            out[key] = Key(default, kind, f"model.drift = {name}: {doc}",
                           check=(lambda v: math.isfinite(v)) if kind == NUM else None,
                           allowed="a finite number")
    return out


def _choices_of(name: str) -> tuple[str, ...]:
    from meanfield.domains import DOMAINS

    if name == "domain":
        return tuple(DOMAINS)
    if name == "scheme":
        return tuple(dict.fromkeys(s for d in DOMAINS.values() for s in d.schemes))
    from solvers.drifts import DRIFTS

    return tuple(DRIFTS)


CORE: dict[str, dict[str, Key]] = {
    "model": {
        "domain": Key("circle", str, "where the measure lives (filled in from the registry)"),
        "dim": Key(2, int, "ambient dimension d (the sphere S^{d-1}); circle: 2, sphere: 3",
                   check=ge(2), allowed="an integer >= 2"),
        "model": Key("usa", str, "usa (unnormalised) | sa (softmax) self-attention",
                     ("usa", "sa")),
        "beta": Key(5.0, (int, float, str), "inverse temperature, kernel W(t) = e^{beta t}/beta; "
                    "inf (or \"inf\"): the zero-temperature model (circle with [attention] "
                    "matrices, particles)", check=ge_or_inf(0), convert=number_or_inf,
                    allowed="a number >= 0 or inf"),
        "time_unit": Key("raw", str, "raw | scaled (kernel e^{beta(t-1)}/beta, USA only)",
                         ("raw", "scaled")),
        "drift": Key("convolution", str, "the velocity field (filled in from the registry)"),
    },
    "attention": {
        "B": Key([], list, "B = Q^T K (the scores <Q x, K y> = <x, B y>) as rows, d x d; "
                 "or give Q and K", check=is_matrix, allowed="a d x d list of rows",
                 nested=True),
        "Q": Key([], list, "query matrix (p x d rows; with K)", check=is_matrix,
                 allowed="a p x d list of rows", nested=True),
        "K": Key([], list, "key matrix (p x d rows; with Q)", check=is_matrix,
                 allowed="a p x d list of rows", nested=True),
        "V": Key([], list, "value matrix (d x d rows; default identity)", check=is_matrix,
                 allowed="a d x d list of rows", nested=True),
        "ensemble": Key("", str, "instead of literal matrices: identity | gaussian | "
                        "orthogonal | symmetric-psd (meanfield.theory.attention), drawn with "
                        "attention.seed", ("", "identity", "gaussian", "orthogonal",
                                           "symmetric-psd")),
        "scale": Key(1.0, NUM, "ensemble: scale s of the random part", check=ge(0),
                     allowed="a number >= 0"),
        "seed": Key(0, int, "ensemble: random seed", check=ge(0), allowed="an integer >= 0"),
        "path": Key("", str, "instead of literal matrices: a .npz with B (or Q and K) and "
                    "optionally V"),
    },
    "frozen": {
        "centres": Key([], list, "frozen cross-attention centres theta_j (angles, S^1; seed "
                       "002 Thm 5.2): every token attends to them, they never move",
                       check=lambda v: all(isinstance(x, (int, float)) and math.isfinite(x)
                                           for x in v), allowed="a list of finite angles"),
        "weights": Key([], list, "their weights a_j in units of one token (default 1 each)",
                       check=lambda v: all(isinstance(x, (int, float)) and x > 0 for x in v),
                       allowed="a list of positive numbers"),
    },
    "discretization": {
        "scheme": Key("fv2", str, "fv2 | rusanov | lf (circle); spectral (sphere); fv (zonal)"),
        "cells": Key(1024, int, "number of cells M (circle, zonal)", check=ge(8),
                     allowed="an integer >= 8"),
        "cfl": Key(0.4, NUM, "fraction of the scheme's positivity/CFL bound (adaptive dt)",
                   check=lambda v: 0 < v <= 1, allowed="a number in (0, 1]"),
        "dt": Key(0.0, NUM, "fixed time step; 0 = adaptive", check=ge(0),
                  allowed="a number >= 0"),
        "accuracy": Key(0.02, NUM, "adaptive dt also <= accuracy / gamma_max", check=gt(0),
                        allowed="a number > 0"),
        "integrator": Key("ssprk3", str, "ssprk3 | euler (lf is always euler)",
                          ("ssprk3", "euler")),
    },
    "initial": {
        "kind": Key("noise", str, "uniform | noise | tokens | mode | bumps | file | quantiles "
                    "(particles: tokens at a circle density's quantiles) | vmf (particles: a "
                    "von Mises-Fisher mixture, initial.directions, kappas, masses)",
                    ("uniform", "noise", "tokens", "mode", "bumps", "file", "quantiles",
                     "vmf")),
        "seed": Key(0, int, "random seed (noise, tokens)", check=ge(0),
                    allowed="an integer >= 0"),
        "amplitude": Key(0.01, NUM, "noise sigma (absolute on the density) or mode alpha",
                         check=ge(0), allowed="a number >= 0"),
        "tokens": Key(10000, NUM, "N for the N-token noise model", check=ge(1),
                      allowed="a number >= 1"),
        "cutoff": Key(64, int, "highest Fourier mode of the N-token noise", check=ge(1),
                      allowed="an integer >= 1"),
        "mode": Key(3, int, "k of the single-mode initial condition", check=ge(1),
                    allowed="an integer >= 1"),
        "phase": Key(0.0, NUM, "phase phi of alpha cos(k theta + phi)",
                     check=math.isfinite, allowed="a finite number"),
        "renormalize": Key(True, bool, "noise: divide by the discrete mass so mu is a "
                           "probability measure; false = seed 003's unnormalised "
                           "1/(2 pi) + sigma xi (mass 1 + O(sigma sqrt(dx)))"),
        "centres": Key([], list, "bumps: centres (angles)"),
        "masses": Key([], list, "bumps: masses (default equal, sum <= 1); vmf: weights"),
        "directions": Key([], list, "vmf: mean directions mu_i (rows in R^d; a non-unit "
                          "mu_i concentrates kappa_i |mu_i| about mu_i/|mu_i|)",
                          check=is_matrix, allowed="a list of rows", nested=True),
        "kappas": Key([], list, "vmf: concentration kappa_i per direction (default: kappa)"),
        "kappa": Key(50.0, NUM, "bumps: von Mises concentration", check=gt(0),
                     allowed="a number > 0"),
        "path": Key("", str, "file: a meanfield HDF5 run (last snapshot) or a .npy array; "
                    "quantiles (particles): a circle run (first snapshot) or .npy density"),
        "normalize_file": Key(False, bool, "file: divide the density by its mass instead of "
                              "refusing a mass other than 1 (w.r.t. the domain's measure)"),
    },
    "atoms": {
        "enabled": Key(True, bool, "clusters narrower than the grid become weighted atoms "
                       "that move with the exact velocity (circle: solvers.atoms; sphere: the "
                       "hand-off of solvers.sphere_atoms once the spectrum is unresolved; "
                       "zonal: the hand-off to rings of solvers.zonal_atoms)"),
        "capture_width": Key(1.5, NUM, "circle, zonal: capture a density cluster once its standard "
                             "deviation is at most this many cells", check=gt(0),
                             allowed="a number > 0"),
        "capture_level": Key(2.0, NUM, "clusters: regions where p > level x mean(p)",
                             check=gt(1), allowed="a number > 1"),
        "capture_min_mass": Key(1e-3, NUM, "circle, zonal: lighter clusters are not captured",
                                check=ge(0), allowed="a number >= 0"),
        "merge_window": Key(1e-3, NUM, "atoms closer than this (radians) merge (seed 000, "
                            "Def. 6.3)", check=ge(0), allowed="a number >= 0"),
        "residual_mass": Key(1e-5, NUM, "circle: a density holding less than this fraction "
                             "of the mass joins the nearest atoms", check=ge(0),
                             allowed="a number >= 0"),
        "max": Key(64, int, "atom slots stored per snapshot (the heaviest atoms)",
                   check=ge(1), allowed="an integer >= 1"),
    },
    "time": {
        "t_end": Key(1.0, NUM, "final time (in model.time_unit)",
                     check=lambda v: math.isfinite(v) and v > 0, allowed="a finite number > 0"),
        "t_end_units": Key("time", str, "time | e_folds: t_end and t_first in units of "
                           "1/gamma_max (e-folding time of the most unstable mode)",
                           ("time", "e_folds")),
        "schedule": Key("linear", str, "linear | log | steps", ("linear", "log", "steps")),
        "n_outputs": Key(101, int, "number of snapshots (linear, log; t = 0 included)",
                         check=ge(2), allowed="an integer >= 2"),
        "t_first": Key(0.0, NUM, "log: first positive output time (0 = t_end/1000)",
                       check=ge(0), allowed="a number >= 0"),
        "every_steps": Key(100, int, "steps: a snapshot every this many steps", check=ge(1),
                           allowed="an integer >= 1"),
        "diagnostics_per_output": Key(5, int, "diagnostic records per snapshot interval",
                                      check=ge(1), allowed="an integer >= 1"),
    },
    "stop": {
        "ebar_above": Key(0.0, NUM, "stop once Ebar exceeds this (0 = never)",
                          check=lambda v: 0 <= v <= 1, allowed="a number in [0, 1]"),
        "wall_seconds": Key(0.0, NUM, "stop after this wall-clock time, resumable (0 = never)",
                            check=ge(0), allowed="a number >= 0"),
        "single_cluster": Key(False, bool, "stop once the whole mass is one atom, the end state "
                              "of the dynamics (grid domains with atoms.enabled)"),
    },
    "output": {
        "path": Key("data/run.h5", str, "output HDF5 file"),
        "compression": Key("gzip", str, "gzip | lzf | none", ("gzip", "lzf", "none")),
        "compression_level": Key(4, int, "gzip level", check=lambda v: 0 <= v <= 9,
                                 allowed="an integer in 0..9"),
        "checkpoint_seconds": Key(60.0, NUM, "wall-clock interval between checkpoints",
                                  check=ge(0), allowed="a number >= 0"),
    },
    "analysis": {
        "cluster_level": Key(2.0, NUM, "cluster = connected region where p > level * p_inf",
                             check=gt(1), allowed="a number > 1"),
        "cluster_min_mass": Key(0.01, NUM, "clusters lighter than this are ignored",
                                check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
        "cluster_eps": Key(0.01, NUM, "particles on S^{d-1}, d >= 3: tokens with "
                           "<x_i, x_j> > 1 - eps are linked", check=lambda v: 0 < v <= 2,
                           allowed="a number in (0, 2]"),
        "exit_threshold": Key(0.3, NUM, "exit from uniform when TV distance exceeds this",
                              check=lambda v: 0 < v < 1, allowed="a number in (0, 1)"),
        "min_plateau_outputs": Key(3, int, "snapshots a metastable plateau must span",
                                   check=ge(1), allowed="an integer >= 1"),
        "min_plateau_efolds": Key(2.0, NUM, "a plateau must also last this many 1/gamma_max",
                                  check=ge(0), allowed="a number >= 0"),
        "clustered_fraction": Key(0.5, NUM, "clusters are counted once this fraction of the "
                                  "mass lies in cluster cores (else 0: still forming)",
                                  check=lambda v: 0 <= v < 1, allowed="a number in [0, 1)"),
        "renyi_delta": Key(0.0, NUM, "token-ordered runs: Renyi separation delta (0 = "
                           "4 beta^{-1/2}, seed 002's c = 4)", check=lambda v: 0 <= v < math.pi,
                           allowed="a number in [0, pi)"),
        "capture_radius": Key(0.05, NUM, "token-ordered runs: a token is captured within this "
                              "arc distance of a centre (notes-002 V9)", check=gt(0),
                              allowed="a number > 0"),
    },
}

#: section order of the full schema (domain sections such as [particles] go before [initial])
_ORDER = ("model", "drift", "attention", "frozen", "discretization", "particles", "atoms",
          "initial", "time", "stop", "output", "analysis")


def _build_schema() -> tuple[dict[str, dict[str, Key]], dict[tuple[str, str], str]]:
    """CORE + [drift] + every domain's keys; and which domain owns each domain key."""
    from meanfield.domains import DOMAINS

    schema: dict[str, dict[str, Key]] = {s: dict(k) for s, k in CORE.items()}
    schema["drift"] = _drift_keys()
    owner: dict[tuple[str, str], str] = {}
    for dom in DOMAINS.values():
        for section, keys in dom.keys.items():
            schema.setdefault(section, {}).update(keys)
            for k in keys:
                owner[(section, k)] = dom.name
    from solvers.drifts import DRIFTS

    docs = {"domain": " | ".join(DOMAINS) + " (circle: S^1 finite volumes; sphere: S^2 "
                      "spectral; zonal: axisymmetric S^{d-1}; particles: tokens)",
            "drift": " | ".join(f"{n} ({c.__doc__.strip().splitlines()[0]})"
                               for n, c in DRIFTS.items()) + " (other domains: convolution)"}
    for name in ("domain", "scheme", "drift"):
        sec = "model" if name != "scheme" else "discretization"
        key = schema[sec][name]
        schema[sec][name] = Key(key.default, key.kind, docs.get(name, key.doc),
                                _choices_of(name))
    ordered = {s: schema[s] for s in _ORDER if s in schema}
    ordered.update({s: v for s, v in schema.items() if s not in ordered})
    return ordered, owner


SCHEMA, DOMAIN_KEYS = _build_schema()


def defaults() -> dict[str, dict[str, Any]]:
    return {sec: {k: copy.deepcopy(key.default) for k, key in keys.items()}
            for sec, keys in SCHEMA.items()}


def _type_ok(value: Any, kind) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        return False
    return isinstance(value, kinds)


def _kind_name(kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list"}
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(names[k] for k in kinds)


def validate_value(section: str, key: str, value: Any) -> Any:
    name = f"{section}.{key}"
    spec = SCHEMA[section][key]
    if not _type_ok(value, spec.kind):
        raise InputError(name, f"must be {_kind_name(spec.kind)}", value)
    if spec.convert is not None:
        value = spec.convert(value)
    elif spec.kind == NUM:
        value = float(value)
    if spec.choices is not None and value not in spec.choices:
        raise InputError(name, f"must be one of {', '.join(spec.choices)}", value)
    if spec.check is not None and not spec.check(value):
        raise InputError(name, f"must be {spec.allowed}", value)
    if spec.kind is list and not spec.nested and not all(_type_ok(v, NUM) for v in value):
        raise InputError(name, "must be a list of numbers", value)
    return value


def merge(base: dict, overrides: Mapping[str, Mapping[str, Any]], origin: str = "") -> dict:
    out = copy.deepcopy(base)
    for section, values in overrides.items():
        if section not in SCHEMA:
            raise InputError(section, f"unknown section{origin}; allowed: "
                             f"{', '.join(SCHEMA)}")
        if not isinstance(values, Mapping):
            raise InputError(section, "must be a table of keys")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise InputError(f"{section}.{key}", f"unknown key{origin}; allowed in "
                                 f"[{section}]: {', '.join(SCHEMA[section])}")
            out[section][key] = validate_value(section, key, value)
    return out


def parse_set(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``section.key=value`` strings (value in TOML syntax; bare words are strings)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise InputError("--set", "must be section.key=value", item)
        lhs, text = item.split("=", 1)
        section, key = lhs.strip().split(".", 1)
        out.setdefault(section, {})[key] = parse_value(text.strip(), _kind(section, key))
    return out


def _kind(section: str, key: str):
    spec = SCHEMA.get(section, {}).get(key)
    return None if spec is None else spec.kind


def parse_value(text: str, kind=None) -> Any:
    """A value in TOML syntax; bare words are strings. For a string key (``kind`` str) the
    text is taken as written (``--set particles.normalization=1`` means "1"), unless quoted."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    if kind is str and not isinstance(value, str):
        return text
    return value


def check_consistency(cfg: dict) -> None:
    """Cross-key rules (each names the key at fault): the shared ones here, the domain's own
    in its module (``Domain.check``)."""
    from meanfield.domains import get

    m, i = cfg["model"], cfg["initial"]
    domain = get(m["domain"])
    if m["time_unit"] == "scaled" and m["model"] != "usa":
        raise InputError("model.time_unit", "'scaled' applies to model.model = 'usa' only")
    for (section, key), owner in DOMAIN_KEYS.items():
        if owner != domain.name and key not in domain.keys.get(section, {}) \
                and cfg[section][key] != SCHEMA[section][key].default:
            raise InputError(f"{section}.{key}", f"applies to model.domain = '{owner}' only "
                             f"(this run has model.domain = '{domain.name}')")
    if i["kind"] == "bumps":
        if not i["centres"]:
            raise InputError("initial.centres", "must list at least one centre for kind 'bumps'")
        if i["masses"] and (len(i["masses"]) != len(i["centres"]) or sum(i["masses"]) > 1 + 1e-12
                            or min(i["masses"]) < 0):
            raise InputError("initial.masses", "must be >= 0, one per centre, summing to <= 1")
    if i["kind"] in ("file", "quantiles") and not i["path"]:
        raise InputError("initial.path", f"must name a file for kind '{i['kind']}'")
    if cfg["stop"]["single_cluster"] and not cfg["atoms"]["enabled"]:
        raise InputError("stop.single_cluster", "needs atoms.enabled = true (the end state is "
                         "one atom)")
    t = cfg["time"]
    if t["schedule"] == "log" and t["t_first"] >= t["t_end"]:
        raise InputError("time.t_first", "must be < time.t_end", t["t_first"])
    domain.check(cfg)


def resolve(path: str | Path | None = None, sets: Iterable[str] = (),
            output: str | None = None) -> tuple[dict, str]:
    """Defaults <- TOML file <- ``--set`` overrides <- ``-o``; returns (config, TOML text)."""
    cfg = defaults()
    explicit: set[tuple[str, str]] = set()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError("CONFIG", "must be an existing TOML file", str(path))
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError("CONFIG", f"is not valid TOML ({exc})", str(path)) from None
        cfg = merge(cfg, data, f" in {p.name}")
        explicit |= {(s, k) for s, v in data.items() if isinstance(v, Mapping) for k in v}
    overrides = parse_set(sets)
    cfg = merge(cfg, overrides)
    explicit |= {(s, k) for s, v in overrides.items() for k in v}
    cfg = apply_domain_defaults(cfg, explicit)
    if output is not None:
        cfg["output"]["path"] = output
    check_consistency(cfg)
    return cfg, dumps(cfg)


def apply_domain_defaults(cfg: dict, explicit: set[tuple[str, str]]) -> dict:
    """Fill keys the user left unset with the defaults of model.domain (e.g. sphere: d = 3)."""
    from meanfield.domains import get

    for section, values in get(cfg["model"]["domain"]).defaults.items():
        for key, value in values.items():
            if (section, key) not in explicit:
                cfg[section][key] = value
    return cfg


def from_text(text: str) -> dict:
    """Parse and validate TOML text (e.g. the config stored in a run file)."""
    cfg = merge(defaults(), tomllib.loads(text))
    check_consistency(cfg)
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "nan")
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(type(v))


def dumps(cfg: Mapping[str, Mapping[str, Any]], comments: bool = False) -> str:
    lines = []
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, spec in keys.items():
            line = f"{key} = {_toml_value(cfg[section][key])}"
            if comments:
                line = f"{line:<34} # {spec.doc}"
            lines.append(line)
        lines.append("")
    return "\n".join(lines)


def flat(cfg: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{'model.beta': 5.0, ...}"""
    return {f"{s}.{k}": v for s, keys in cfg.items() for k, v in keys.items()}
