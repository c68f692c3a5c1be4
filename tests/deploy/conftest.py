"""Session fixtures of the deploy tests: built tools, one kwok cluster, the images."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, Tools, build_images, k8s_bin_dir, start_cluster


@pytest.fixture(scope="session")
def tools() -> Tools:
    """helm, kubectl and the cluster binaries, built once from the Go module proxy (cached)."""
    return Tools(k8s_bin_dir())


@pytest.fixture(scope="session")
def cluster(tools: Tools) -> Iterator[Cluster]:
    """A real kube-apiserver with kwok nodes on loopback for the whole session."""
    running = start_cluster(tools)
    try:
        yield running
    finally:
        running.down()


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Every service image, built once per session with podman ({target: image})."""
    return build_images()


BUILT = {"tools", "cluster", "images"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The deploy tests last: `make test` builds their binaries and images meanwhile.  The
    first test to need them may wait for that build (minutes on a cold machine): the tests
    that use them get an hour, not the suite's 10 minutes, so a cold build is not a failure."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/deploy/"))
    for item in items:
        if BUILT & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.timeout(3600))
