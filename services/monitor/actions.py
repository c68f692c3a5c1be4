"""Acting on a decision: rewrite the experiment config, move the registry's channel pointers.

The config lives behind one small interface, ``ConfigStore``: a YAML file locally
(``FileConfigStore``, replaced atomically, the router re-reads it) or a Kubernetes ConfigMap in
a cluster (``ConfigMapStore``, through the ``kubernetes`` client; the router's pods see the
mounted file change).  ``apply`` writes the config first and moves the registry second: a
router that already serves control after a roll back is safe whatever the registry says.
In dry-run mode nothing is written; the decision is only reported and recorded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from services.common.artifacts import CHANNELS, ArtifactError, Registry
from services.common.experiment import ConfigError, Experiment, dump_config, validate_config
from services.common.fsio import atomic_write_text
from services.monitor.policy import Decision

__all__ = ["Applied", "ConfigMapStore", "ConfigStore", "FileConfigStore", "apply", "to_yaml"]

log = logging.getLogger("marquee.monitor.actions")


class ConfigStore(Protocol):
    """Where the experiment config is read from and written to."""

    def read(self) -> Experiment: ...

    def write(self, config: Experiment) -> None: ...

    def describe(self) -> str: ...


def to_yaml(config: Experiment) -> str:
    """The config as YAML text the router reads back to an equal config."""
    header = "# written by the marquee monitor; the router reloads it\n"
    return header + yaml.safe_dump(dump_config(config), sort_keys=False)


def parse_yaml(text: str, source: str) -> Experiment:
    """An ``Experiment`` from YAML text; ConfigError with one line per mistake."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    return validate_config(data, source)


class FileConfigStore:
    """The experiment YAML file the router polls (replaced atomically, never half-written)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def read(self) -> Experiment:
        """The config in the file now."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc}") from None
        return parse_yaml(text, str(self.path))

    def write(self, config: Experiment) -> None:
        """Replace the file with ``config``."""
        atomic_write_text(self.path, to_yaml(config))

    def describe(self) -> str:
        """Where the config lives, for logs and records."""
        return f"file:{self.path}"


class ConfigMapStore:
    """One key of a Kubernetes ConfigMap (the router mounts it as its experiment file)."""

    def __init__(
        self, namespace: str, name: str, key: str = "experiment.yaml", api: Any = None
    ) -> None:
        self.namespace, self.name, self.key = namespace, name, key
        self._api = api

    @property
    def api(self) -> Any:
        """The CoreV1 API client (in-cluster credentials, else the local kubeconfig)."""
        if self._api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            self._api = client.CoreV1Api()
        return self._api

    def read(self) -> Experiment:
        """The config in the ConfigMap now."""
        cm = self.api.read_namespaced_config_map(self.name, self.namespace)
        text = (cm.data or {}).get(self.key)
        if text is None:
            raise ConfigError(f"{self.describe()}: has no key {self.key!r}")
        return parse_yaml(text, self.describe())

    def write(self, config: Experiment) -> None:
        """Patch the ConfigMap's key with ``config``."""
        self.api.patch_namespaced_config_map(
            self.name, self.namespace, {"data": {self.key: to_yaml(config)}}
        )

    def describe(self) -> str:
        """Where the config lives, for logs and records."""
        return f"configmap:{self.namespace}/{self.name}#{self.key}"


@dataclass
class Applied:
    """What ``apply`` did (or, in dry-run, would have done)."""

    dry_run: bool
    config_written: bool = False
    registry: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        return dict(self.__dict__)


def apply(
    decision: Decision, store: ConfigStore | None, registry: Registry | None, *, dry_run: bool
) -> Applied:
    """Carry out ``decision``: config first, then registry moves; nothing in dry-run."""
    done = Applied(dry_run=dry_run)
    if dry_run or not decision.changes:
        done.registry = [dict(m.__dict__, done=False) for m in decision.registry]
        return done
    if decision.config is not None and store is not None:
        current = store.read()
        if current.experiment != decision.experiment:
            done.errors.append(
                f"{store.describe()} now holds experiment {current.experiment!r}; not overwritten"
            )
            return done
        store.write(decision.config)
        done.config_written = True
    for move in decision.registry:
        entry = dict(move.__dict__, done=False)
        if registry is None:
            entry["error"] = "no registry configured"
        else:
            try:
                if move.op == "promote":
                    # The arm follows a channel (its version now) or is pinned to a version.
                    ref = move.version or "canary"
                    version = registry.channel(move.model, ref) if ref in CHANNELS else ref
                    entry["version"] = registry.promote(move.model, version, to=move.channel)
                else:
                    entry["version"] = registry.rollback(move.model, move.channel)
                entry["done"] = True
            except (ArtifactError, OSError, ValueError) as exc:
                entry["error"] = str(exc)
                done.errors.append(f"registry {move.op} {move.model}/{move.channel}: {exc}")
        done.registry.append(entry)
    log.info(
        "decision applied",
        extra={"experiment": decision.experiment, "action": str(decision.action), **done.to_json()},
    )
    return done
