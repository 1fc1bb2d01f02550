"""The embedded stack, started once for the e2e tests and stopped after them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pijobs.local.stack import LocalConfig, LocalStack


@pytest.fixture(scope="package")
def local_stack(tmp_path_factory: pytest.TempPathFactory, wordcount_plugin: None) -> Iterator[LocalStack]:
    config = LocalConfig(
        max_active_stacks=2,
        log_dir=tmp_path_factory.mktemp("workers"),
        extra_env={"PIJOBS_HEARTBEAT_SECONDS": "1"},
    )
    with LocalStack(config) as stack:
        yield stack
