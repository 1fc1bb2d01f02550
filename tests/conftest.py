"""Shared by every test: botocore reads each service's model once per process, not once per test, and moto
makes no sample AMIs.

A botocore session loads its service models (large JSON files) through its own loader and caches them in
it. moto's ``mock_aws`` resets boto3's default session, so every test's clients started with an empty cache
and spent about 0.2 s per client re-reading the same files. One loader, read-only once filled, serves them
all; what the tests exercise (the clients' calls) is unchanged.
"""

from __future__ import annotations

import os

import botocore.loaders
import botocore.session

# moto's EC2 makes some 2,600 sample AMIs with a volume each for every account it starts (0.65 s per test);
# the job templates take their image from an SSM parameter and no test looks one up.
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

_LOADER = botocore.loaders.create_loader()


def _shared_loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    return _LOADER if search_path_string is None else botocore.loaders.create_loader(search_path_string)


botocore.session.create_loader = _shared_loader  # type: ignore[assignment]
