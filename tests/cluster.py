"""Real deployment parts for the deploy tests: a kwok cluster, helm, promtool and podman images.

The cluster is a real kube-apiserver, controller-manager and scheduler with etcd, and kwok
nodes so Pods are scheduled and report Running (no container runs: the images are exercised
with podman separately).  ``scripts/cluster.sh`` builds the binaries once from the Go module
proxy into a versioned cache outside the clone and starts the cluster on loopback;
``scripts/images.sh`` builds the images once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.infra import ROOT, free_port, require, skip_or_fail

CLUSTER_SH = ROOT / "scripts" / "cluster.sh"
IMAGES_SH = ROOT / "scripts" / "images.sh"
CHART = ROOT / "helm" / "marquee"


def k8s_bin_dir() -> Path:
    """Where ``scripts/cluster.sh build`` puts its binaries (built on first use, then reused)."""
    require("go", "the cluster's binaries are built from the Go module proxy")
    # The build takes ~10 minutes of both cores on a cold machine and a second when cached.
    out = subprocess.run(
        [str(CLUSTER_SH), "build"], capture_output=True, text=True, timeout=3600, check=False
    )
    if out.returncode != 0:
        raise AssertionError(f"scripts/cluster.sh build failed:\n{out.stderr[-4000:]}")
    env = subprocess.run(
        [str(CLUSTER_SH), "env"], capture_output=True, text=True, check=True
    ).stdout
    for line in env.splitlines():
        if line.startswith("export PATH="):
            return Path(line.removeprefix("export PATH=").split(":", 1)[0])
    raise AssertionError(f"scripts/cluster.sh env said nothing about PATH: {env}")


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    input_text: str | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure raise with its output (what a test report should show)."""
    out = subprocess.run(
        list(argv),
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and out.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        )
    return out


@dataclass
class Tools:
    """The built deployment tools: helm, kubectl (v1.34, ours) and the cluster binaries."""

    bin_dir: Path

    @property
    def helm(self) -> str:
        """Path of helm."""
        return str(self.bin_dir / "helm")

    @property
    def kubectl(self) -> str:
        """Path of kubectl."""
        return str(self.bin_dir / "kubectl")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment with these tools first on PATH; helm's state kept in the session."""
        home = ROOT / ".run" / "helm-home"
        return {
            **os.environ,
            "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}",
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
            **extra,
        }


@dataclass
class Cluster:
    """A running kwok cluster started by ``scripts/cluster.sh up``."""

    tools: Tools
    name: str
    port: int
    workdir: Path

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig kwokctl wrote."""
        return self.workdir / "clusters" / self.name / "kubeconfig.yaml"

    @property
    def env(self) -> dict[str, str]:
        """Environment of the cluster's scripts and tools."""
        return self.tools.env(
            CLUSTER_NAME=self.name,
            CLUSTER_PORT=str(self.port),
            KWOK_WORKDIR=str(self.workdir),
            KUBECONFIG=str(self.kubeconfig),
        )

    def kubectl(self, *args: str, check: bool = True, input_text: str | None = None) -> str:
        """kubectl against this cluster; its stdout."""
        return run(
            [self.tools.kubectl, *args], env=self.env, check=check, input_text=input_text
        ).stdout

    def kubectl_json(self, *args: str) -> Any:
        """kubectl ... -o json, parsed."""
        return json.loads(self.kubectl(*args, "-o", "json"))

    def helm(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """helm against this cluster."""
        return run([self.tools.helm, *args], env=self.env, check=check, timeout=timeout)

    def down(self) -> None:
        """Delete the cluster (its processes and files)."""
        run([str(CLUSTER_SH), "down"], env=self.env, check=False, timeout=120)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_cluster(tools: Tools) -> Cluster:
    """A fresh kwok cluster of the session's own on a free loopback port."""
    port = free_port()
    cluster = Cluster(
        tools=tools,
        name=f"marquee-test-{port}",
        port=port,
        workdir=ROOT / ".run" / f"kwok-{port}",
    )
    started = time.monotonic()
    out = run([str(CLUSTER_SH), "up"], env=cluster.env, check=False, timeout=600)
    if out.returncode != 0:
        cluster.down()
        raise AssertionError(f"scripts/cluster.sh up failed:\n{out.stderr[-4000:]}")
    cluster.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    print(f"kwok cluster up in {time.monotonic() - started:.1f} s")
    return cluster


def require_podman() -> None:
    """Skip (locally) or fail (in CI) without podman and runc."""
    require("podman", "the images are built and run with podman")
    require("runc", "podman runs containers with runc here")


def build_images(targets: Sequence[str] = ()) -> dict[str, str]:
    """Build the images once (cached layers make a rebuild quick); {target: image}."""
    require_podman()
    out = run([str(IMAGES_SH), "build", *targets], check=False, timeout=3600)
    if out.returncode != 0:
        skip_or_fail(f"scripts/images.sh build failed:\n{out.stderr[-4000:]}")
    names = run([str(IMAGES_SH), "list"]).stdout.split()
    images = {n.rsplit("/", 1)[-1].split(":")[0].removeprefix("marquee-"): n for n in names}
    return {t: images[t] for t in (targets or images)}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """podman with the project's runtime settings (``scripts/images.sh podman``)."""
    return run([str(IMAGES_SH), "podman", *args], check=check, timeout=timeout)
