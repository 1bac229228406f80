"""The plumbing every master-side runner shares: the model as the minions last received it,
a function run on one minion, the formula's YAML files. Salt gives utils no ``__utils__``: the
runners pass their ``__opts__`` and the model util's ``settings`` in.

The runners (``_runners/pgcluster.py``, ``_runners/pgcluster_growth.py``) call these through
``__utils__["pgcluster_master.<function>"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests
import salt.cache
import salt.client
import salt.fileclient
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

__virtualname__ = "pgcluster_master"
FORMULA = "pgcluster"  # the formula's folder in the master's file roots


def __virtual__():
    return __virtualname__


class PgclusterError(CommandExecutionError):
    """A runner cannot do what was asked; the message says why."""


def formula_yaml(opts: dict, name: str) -> dict:
    """salt://pgcluster/NAME from the master's own file roots."""
    client = salt.fileclient.FSClient(opts)
    try:
        path = client.cache_file(f"salt://{FORMULA}/{name}", "base")
    finally:
        client.destroy()
    if not path:
        raise PgclusterError(f"salt://{FORMULA}/{name} is not in the master's file roots")
    with salt.utils.files.fopen(path) as f:
        return salt.utils.yaml.safe_load(f) or {}


def cached(opts: dict, bank: str, minion: str) -> dict:
    """What the master's cache holds for MINION in BANK (pillar, grains...), {} when nothing."""
    data = salt.cache.factory(opts).fetch(bank, minion)
    return data if isinstance(data, dict) else {}


def model(opts: dict, settings: Callable[..., dict], minion: str | None = None) -> dict:
    """The validated model as MINION (default: any minion that has it) last received its pillar,
    merged over the formula's defaults by SETTINGS (``pgcluster_model.settings``). Raises
    PgclusterError naming the pillar's problems."""
    candidates = [minion] if minion is not None else salt.cache.factory(opts).list("pillar")
    for mid in candidates:
        pillar = cached(opts, "pillar", mid).get(FORMULA) or {}
        if not pillar.get("clusters"):
            continue
        grains = dict(cached(opts, "grains", mid), id=mid)
        try:
            return settings(formula_yaml(opts, "defaults.yaml"), formula_yaml(opts, "osfamilymap.yaml"), pillar, grains)
        except CommandExecutionError as exc:
            raise PgclusterError(str(exc)) from None
    return {"clusters": {}, "hosts": {}}


def cluster(model: dict, name: Any) -> dict:
    """Cluster NAME of MODEL, or PgclusterError naming the clusters there are."""
    c = model["clusters"].get(name) if isinstance(name, str) else None
    if not c:
        known = ", ".join(sorted(model["clusters"])) or "none"
        raise PgclusterError(f"unknown cluster {name!r} (clusters: {known})")
    return c


def call(opts: dict, minion: str, fun: str, *args: Any, wait: float = 120, **kwarg: Any) -> Any:
    """FUN on MINION, waiting up to WAIT seconds; returns its return. Raises PgclusterError when
    the minion does not answer or the function fails (the message is the function's own)."""
    try:
        # A minion busy with a long job (a restore) still answers find_job within seconds.
        with salt.client.LocalClient(mopts=dict(opts, gather_job_timeout=15)) as local:
            ret = local.cmd(minion, fun, list(args), timeout=int(wait), full_return=True, kwarg=kwarg or None)
    except Exception as exc:  # SaltClientError, a timeout...: one message, not a traceback
        raise PgclusterError(f"{minion}: {fun}: {type(exc).__name__}: {exc}") from None
    r = ret.get(minion)
    if not isinstance(r, dict) or str(r.get("ret")).startswith("Minion did not return"):
        why = f": {r['ret']}" if isinstance(r, dict) else ""
        raise PgclusterError(f"{minion} does not answer ({fun}{why})")
    if r.get("retcode", 0) != 0 or r.get("ret") is False:
        why = " ".join(str(r.get("ret")).split()).removeprefix("ERROR: ")
        raise PgclusterError(
            f"{minion}: {why[:400]}" if why.startswith(fun.split(".")[0]) else f"{minion}: {fun}: {why[:400]}"
        )
    return r["ret"]


def prometheus(url: str | None, ca: str, path: str, params: dict, timeout: float = 30) -> Any:
    """GET PATH (e.g. /api/v1/query) of the Prometheus at URL (``pgcluster_model.prometheus_url``),
    its certificate checked against CA; the answer's ``data``. Raises PgclusterError saying why
    there is none."""
    if not url:
        raise PgclusterError("monitoring is not enabled (pgcluster:monitoring:enabled): Prometheus has no history")
    try:
        resp = requests.get(f"{url}{path}", params=params, timeout=timeout, verify=ca)
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise PgclusterError(f"Prometheus at {url} does not answer: {type(exc).__name__}: {exc}") from None
    if body.get("status") != "success":
        raise PgclusterError(f"Prometheus refused {params.get('query')!r}: {body.get('error', resp.status_code)}")
    return body["data"]
