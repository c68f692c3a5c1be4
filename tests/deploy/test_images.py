"""The container images, built with podman and run as a cluster would run them: non-root, a
read-only root filesystem, /tmp the only scratch space; each answers /readyz and one real
request (recommender and router with a small registered model, ingest against the test broker,
the monitor on a store and an experiment file)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cluster import podman
from tests.deploy.render import helm_template
from tests.infra import KafkaBroker, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZES = {"n_users": 2000, "n_items": 600, "n_factors": 16, "seen_per_user": 10}
# What every Deployment in the chart sets: no writable root, scratch space in /tmp only.
HARDENED = ["--read-only", "--tmpfs", "/tmp:rw,size=256m", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]  # fmt: skip


def shared_dir(path: Path) -> Path:
    """A folder the image's user (uid 10001) can read and write."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


class Containers:
    """Containers started by one test, removed by name afterwards."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def run(self, image: str, *args: str, opts: list[str] | None = None) -> str:
        """``podman run -d`` ``image`` with ``args``; its name."""
        name = f"marquee-test-{uuid.uuid4().hex[:10]}"
        podman("run", "-d", "--name", name, *HARDENED, *(opts or []), image, *args)
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        """The container's output so far."""
        return podman("logs", name, check=False).stdout + podman("logs", name, check=False).stderr

    def ip(self, name: str) -> str:
        """The container's address on podman's bridge."""
        return podman("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()

    def memory_mib(self, name: str) -> float:
        """Resident memory now (cgroup), MiB."""
        out = podman("stats", "--no-stream", "--format", "json", name).stdout
        usage = json.loads(out)[0]["mem_usage"].split("/")[0].strip()
        number, unit = re.fullmatch(r"([\d.]+)\s*([kMG]?B)", usage).groups()  # type: ignore[union-attr]
        scale = {"B": 1.0, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
        return float(number) * scale / 2**20

    def remove_all(self) -> None:
        """Remove every container this test started."""
        for name in self.names:
            podman("rm", "-f", "-t", "2", name, check=False)


@pytest.fixture
def containers() -> Iterator[Containers]:
    """Containers of one test; removed afterwards, pass or fail."""
    started = Containers()
    try:
        yield started
    finally:
        started.remove_all()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model registry with a small synthetic svd model on channel stable."""
    from services.recommender.synthetic import write_synthetic_model

    root = shared_dir(tmp_path_factory.mktemp("registry"))
    write_synthetic_model(root, name="svd", family="svd", seed=1, **SIZES)
    for p in root.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o644)
    return root


def ready(url: str, containers: Containers, name: str, timeout: float = 90) -> None:
    """Wait until ``url`` answers 200 (or fail with the container's log)."""

    def ok() -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ok, timeout, every=0.5, what=url)
    except AssertionError:
        pytest.fail(f"{name} never got ready at {url}:\n{containers.logs(name)[-3000:]}")


def start_recommender(
    images: dict[str, str], containers: Containers, registry: Path
) -> tuple[str, int]:
    """The recommender image on the registry (its default bind, published); (name, port)."""
    port = free_port()
    name = containers.run(
        images["recommender"],
        opts=["-p", f"127.0.0.1:{port}:8082", "-v", f"{registry}:/data/registry:ro",
              "-e", "MARQUEE_RECOMMENDER_REGISTRY_ROOT=/data/registry",
              "-e", "MARQUEE_RECOMMENDER_MODEL_NAME=svd",
              "-e", "MARQUEE_RECOMMENDER_WORKERS=2"],
    )  # fmt: skip
    ready(f"http://127.0.0.1:{port}/readyz", containers, name)
    return name, port


def test_every_image_runs_as_non_root_without_a_compiler(images: dict[str, str]) -> None:
    assert set(images) == {"recommender", "router", "ingest", "monitor", "simulator", "trainer"}
    for target, image in images.items():
        out = podman(
            "run", "--rm", *HARDENED, "--entrypoint", "sh", image, "-c",
            "id -u; command -v gcc cc c++ || echo no-compiler; marquee --version;"
            " touch /opt/x 2>/dev/null && echo writable || echo read-only",
        ).stdout.split()  # fmt: skip
        assert out[0] == "10001", (target, out)
        assert "no-compiler" in out, (target, out)
        assert out[-1] == "read-only", (target, out)
        assert any(re.fullmatch(r"\d+\.\d+\.\d+", w) for w in out), (target, out)


def test_images_share_one_python_layer(images: dict[str, str]) -> None:
    """All targets stack on the same environment layer: pulling a second image is cheap."""
    parsed = {
        t: json.loads(podman("inspect", "-f", "{{json .RootFS.Layers}}", i).stdout)
        for t, i in images.items()
    }
    first = parsed["recommender"]
    for target, ls in parsed.items():
        # Base, runtime packages, the environment and the project: the same four below each.
        assert ls[:4] == first[:4], target


def test_recommender_image_serves_a_registered_model(
    images: dict[str, str], containers: Containers, registry: Path
) -> None:
    name, port = start_recommender(images, containers, registry)
    answer = requests.get(f"http://127.0.0.1:{port}/recommend/7", timeout=5)
    assert answer.status_code == 200
    ids = answer.text.strip().split(",")
    assert len(ids) == 20 == len(set(ids))
    assert answer.headers["X-Model-Name"] == "svd"
    assert requests.get(f"http://127.0.0.1:{port}/recommend/abc", timeout=5).status_code == 400
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'marquee_recommender_requests_total{model_version="' in metrics
    print(f"recommender container memory: {containers.memory_mib(name):.0f} MiB")


def test_router_image_routes_and_the_helm_test_hook_passes(
    images: dict[str, str], containers: Containers, registry: Path, tmp_path: Path, tools: Any
) -> None:
    reco, _ = start_recommender(images, containers, registry)
    upstream = f"http://{containers.ip(reco)}:8082"
    config = shared_dir(tmp_path / "experiment")
    (config / "experiment.yaml").write_text(
        "experiment: image-test\nsalt: image-test\nmode: split\nstatus: running\n"
        "exposure: 1.0\ncontrol: control\narms:\n"
        f"  - {{name: control, url: '{upstream}', weight: 50, model: svd, channel: stable}}\n"
        f"  - {{name: canary, url: '{upstream}', weight: 50, model: svd, channel: stable}}\n"
        "fallback: [the+matrix+1999]\n"
    )
    (config / "experiment.yaml").chmod(0o644)
    port = free_port()
    router = containers.run(
        images["router"],
        opts=["-p", f"127.0.0.1:{port}:8082", "-v", f"{config}:/etc/marquee/experiment:ro",
              "-e", "MARQUEE_ROUTER_CONFIG_PATH=/etc/marquee/experiment/experiment.yaml",
              "-e", "MARQUEE_ROUTER_WORKERS=1"],
    )  # fmt: skip
    ready(f"http://127.0.0.1:{port}/readyz", containers, router)
    answer = requests.get(f"http://127.0.0.1:{port}/recommend/11", timeout=5)
    assert answer.status_code == 200
    assert answer.headers["X-Arm"] in {"control", "canary"}
    assert answer.headers["X-Served-By"] == answer.headers["X-Arm"]
    assert len(answer.text.strip().split(",")) == 20

    # The chart's `helm test` hook, run as the cluster would run it, against this router.
    objects = helm_template(tools)
    hook = next(o for o in objects if o["metadata"]["name"].endswith("-test-recommendation"))
    container = hook["spec"]["template"]["spec"]["containers"][0]
    argv = [*container["args"][:-1], f"http://{containers.ip(router)}:8082/recommend/1"]
    out = podman("run", "--rm", *HARDENED, "--entrypoint", container["command"][0],
                 images["router"], *container["command"][1:], *argv)  # fmt: skip
    assert "20 movies:" in out.stdout
    # And it fails when the router is gone: the hook can fail.
    podman("stop", "-t", "2", router)
    failed = podman("run", "--rm", *HARDENED, "--entrypoint", container["command"][0],
                    images["router"], *container["command"][1:], *argv, check=False)  # fmt: skip
    assert failed.returncode != 0


def stream_lines(n: int) -> list[bytes]:
    """``n`` valid watch lines of the last hour (ingest judges times against Kafka's)."""
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=1)
    return [
        f"{(start + timedelta(seconds=i)).isoformat(timespec='seconds')},{1000 + i % 50},"
        f"GET /data/m/the+matrix+1999/{i % 90}.mpg".encode()
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def ingested(
    images: dict[str, str], kafka: KafkaBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The ingest image run on a fresh topic of the test broker until every line is stored."""
    from kafka import KafkaProducer

    topic = kafka.create_topic(f"image-{uuid.uuid4().hex[:8]}", partitions=2)
    lines = [*stream_lines(300), b"not a stream line"]
    producer = KafkaProducer(bootstrap_servers=kafka.bootstrap)
    for line in lines:
        producer.send(topic, line)
    producer.flush()
    producer.close()

    data = shared_dir(tmp_path_factory.mktemp("events"))
    port = free_port()
    containers = Containers()
    try:
        # Host network: the test broker advertises 127.0.0.1.
        name = containers.run(
            images["ingest"],
            opts=["--network", "host", "-v", f"{data}:/data/events",
                  "-e", f"MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap}",
                  "-e", "MARQUEE_INGEST_STORE_PATH=/data/events/store",
                  "-e", f"MARQUEE_INGEST_TOPICS={topic}",
                  "-e", f"MARQUEE_INGEST_GROUP_ID=image-test-{topic}",
                  "-e", "MARQUEE_INGEST_DLQ_ENABLED=false",
                  "-e", "MARQUEE_INGEST_FLUSH_INTERVAL_S=1",
                  "-e", f"MARQUEE_INGEST_HTTP_PORT={port}"],
        )  # fmt: skip
        ready(f"http://127.0.0.1:{port}/readyz", containers, name)

        def consumed() -> float:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            m = re.search(r"^marquee_ingest_lines_total(?:\{[^}]*\})? (\S+)$", text, re.M)
            return float(m[1]) if m else 0.0

        wait_until(lambda: consumed() >= len(lines), 90, every=0.5, what="every line consumed")
        store = data / "store"
        wait_until(lambda: list((store / "_commits").glob("*.json")), 60, what="a commit")
        # SIGTERM, as Kubernetes stops a pod: ingest flushes and exits cleanly.
        podman("stop", "-t", "30", name)
        state = podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip()
        yield {"store": store, "lines": len(lines), "exit_code": state}
    finally:
        containers.remove_all()


def test_ingest_image_stores_the_test_brokers_stream(ingested: dict[str, Any]) -> None:
    import pyarrow.parquet as pq

    store: Path = ingested["store"]

    def rows(folder: Path) -> int:
        return sum(pq.read_metadata(f).num_rows for f in folder.rglob("*.parquet"))

    # Every valid line stored once, the malformed one quarantined: nothing lost, nothing twice.
    assert rows(store / "events" / "watch") == ingested["lines"] - 1
    assert rows(store / "quarantine") == 1
    assert ingested["exit_code"] == "0"


def test_monitor_image_evaluates_an_experiment(
    images: dict[str, str], containers: Containers, tmp_path: Path, ingested: dict[str, Any]
) -> None:
    data = shared_dir(tmp_path / "monitor")
    (data / "experiment.yaml").write_text(
        "experiment: image-test\nsalt: image-test\nmode: split\nstatus: running\n"
        "exposure: 0.5\ncontrol: control\narms:\n"
        "  - {name: control, url: 'http://a:8082', weight: 50}\n"
        "  - {name: canary, url: 'http://b:8082', weight: 50}\n"
        "fallback: [the+matrix+1999]\n"
    )
    (data / "experiment.yaml").chmod(0o666)
    port = free_port()
    name = containers.run(
        images["monitor"], "run", "--dry-run",
        opts=["--network", "host", "-v", f"{data}:/data",
              "-v", f"{ingested['store']}:/data/store:ro",
              "-e", "MARQUEE_MONITOR_CONFIG_PATH=/data/experiment.yaml",
              "-e", "MARQUEE_MONITOR_STORES=/data/store",
              "-e", "MARQUEE_MONITOR_DB_URL=sqlite:////tmp/history.sqlite3",
              "-e", "MARQUEE_MONITOR_CHECKPOINT_DIR=/tmp/state",
              "-e", "MARQUEE_MONITOR_INTERVAL_S=0.5",
              "-e", "MARQUEE_MONITOR_HTTP_HOST=0.0.0.0",
              "-e", f"MARQUEE_MONITOR_HTTP_PORT={port}"],
    )  # fmt: skip
    ready(f"http://127.0.0.1:{port}/readyz", containers, name)
    answer = requests.get(f"http://127.0.0.1:{port}/api/experiment", timeout=5)
    assert answer.status_code == 200
    assert "image-test" in answer.text
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "marquee_monitor_steps_total" in metrics


def rendered_container(tools: Any, kind: str, suffix: str, *values: str) -> dict[str, Any]:
    """The first container of the chart's ``kind`` named ``*suffix``, rendered with ``values``."""
    from tests.deploy.render import find

    obj = find(helm_template(tools, *(a for v in values for a in ("--set", v))), kind, suffix)
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    container: dict[str, Any] = spec["template"]["spec"]["containers"][0]
    return container


def env_options(container: dict[str, Any]) -> list[str]:
    """``-e NAME=value`` for each of the container's literal environment variables."""
    literal = [e for e in container.get("env", []) if "value" in e]
    return [a for e in literal for a in ("-e", f"{e['name']}={e['value']}")]


def test_simulator_image_serves_the_world_api(
    images: dict[str, str], containers: Containers, tools: Any
) -> None:
    # Run as the chart runs it (its args and environment), in a small world.
    container = rendered_container(
        tools, "Deployment", "-simulator",
        "simulator.enabled=true", "simulator.users=5000", "simulator.movies=500",
    )  # fmt: skip
    port = free_port()
    name = containers.run(
        images["simulator"], *container["args"],
        opts=["-p", f"127.0.0.1:{port}:8080", *env_options(container)],
    )  # fmt: skip
    ready(f"http://127.0.0.1:{port}/readyz", containers, name)
    user = requests.get(f"http://127.0.0.1:{port}/user/42", timeout=5)
    assert user.status_code == 200
    assert list(user.json()) == ["user_id", "age", "occupation", "gender"]
    assert requests.get(f"http://127.0.0.1:{port}/user/99999999", timeout=5).status_code == 404
    bad = requests.get(f"http://127.0.0.1:{port}/user/abc", timeout=5)
    assert bad.status_code == 400 and "error" in bad.json()
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert "marquee_sim" in metrics


def test_trainer_image_runs_the_cronjobs_command(
    images: dict[str, str], tools: Any, tmp_path: Path
) -> None:
    """The CronJob's exact command on a small snapshot: every family registered on canary; a
    second run finds the registry up to date and exits 0 (the schedule may fire again)."""
    events = shared_dir(tmp_path / "events")
    registry = shared_dir(tmp_path / "registry")
    # A small snapshot, written by the image's own `marquee train synth`.
    podman("run", "--rm", *HARDENED, "-v", f"{events}:/data/events", images["trainer"],
           "synth", "/data/events/snapshots/small", "--users", "300", "--items", "100")  # fmt: skip
    container = rendered_container(tools, "CronJob", "-trainer")
    assert container["args"] == ["--snapshot", "latest", "--register", "canary"]
    argv = ["run", "--rm", *HARDENED, *env_options(container),
            "-v", f"{events}:/data/events:ro", "-v", f"{registry}:/data/registry",
            images["trainer"], *container["args"], "--json"]  # fmt: skip
    first = podman(*argv, timeout=600)
    report = json.loads(first.stdout)
    families = set(report["models"])
    assert {"popularity", "svd", "als"} <= families
    for family in families:
        channel = json.loads((registry / family / "channels" / "canary.json").read_text())
        assert (registry / family / channel["version"] / "manifest.json").is_file(), family
    again = podman(*argv, timeout=600)
    assert "up to date" in again.stderr
