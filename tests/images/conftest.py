"""Container image tests: the images of `scripts/images.sh` (`make images`) run under podman.

Every test here is marked `slow` and `images`: they build images (the base's first build downloads
Debian packages; later builds reuse it) and run containers, so they run in `make test-slow`, not in
`make test`. They need root, podman and runc (scripts/images.sh installs the Debian packages when it may).

The Kafka broker and the Redis servers come from the integration fixtures (tests/integration/conftest.py:
`kafka_bootstrap`, `redis_server_factory`, `namespace`), loaded here under another module name so both
folders share one contract. Containers run on the host network, so they reach those loopback servers.

`built_images` builds every image this branch can build, once per session; `podman` starts containers
and removes, at the end, the ones it started (never another's).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INTEGRATION = REPO / "tests" / "integration"
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if str(INTEGRATION) not in sys.path:
    sys.path.insert(0, str(INTEGRATION))  # the integration conftest imports kafka_broker by name

from podman_helpers import IMAGES_SCRIPT, Podman  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "dscore_images_integration_fixtures", INTEGRATION / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_fixtures = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _fixtures  # dataclasses look their module up while the class is built
_spec.loader.exec_module(_fixtures)

kafka_bootstrap = _fixtures.kafka_bootstrap
redis_server_factory = _fixtures.redis_server_factory
namespace = _fixtures.namespace

#: a cold build: debootstrap and Debian's updates (~3 min here), then each image
BUILD_TIMEOUT_S = 1800


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "images: builds and runs the container images (tests/images/)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.images)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """`scripts/images.sh build`: every service image of this branch, by service name -> reference."""
    try:
        done = subprocess.run(
            [str(IMAGES_SCRIPT), "build"],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/images.sh build took over {BUILD_TIMEOUT_S} s: {exc.stderr!r}", False)
    if done.returncode != 0:
        pytest.fail(f"scripts/images.sh build failed (exit {done.returncode}):\n{done.stderr}", False)
    refs = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    images = {ref.split("/")[-1].split(":")[0]: ref for ref in refs}
    assert images, f"scripts/images.sh build printed no image:\n{done.stderr}"
    return images


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    runner = Podman()
    yield runner
    runner.remove_all()
