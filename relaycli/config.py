"""Where the CLI finds records and specs: RELAY_* variables, read as the functions read them, or flags."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from relay import naming
from relay.adapters.localfs import local_path
from relay.adapters.stores import results_store
from relay.config import DEFAULT_CATALOG, Settings, setting
from relay.ports import BlobStore
from relaycli.emulators import check_emulator
from relaycli.errors import UsageError
from relaycli.output import Paint, colour_wanted


@dataclass(frozen=True)
class CliConfig:
    """The locations one command works with; `*_from` names where each came from, for error messages."""

    results_uri: str
    catalog_uri: str
    local_root: str
    results_from: str = "RELAY_RESULTS_URI"
    catalog_from: str = "RELAY_CATALOG_URI"
    policy_uri: str = ""  # named by --policy or RELAY_POLICY_URI, so it must exist; "" : the catalog's, if any
    policy_from: str = "RELAY_POLICY_URI"
    backend: str = Settings.backend  # decides whether file:// locations may be allowed, as in the functions

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        results: str | None = None,
        catalog: str | None = None,
        policy: str | None = None,
    ) -> CliConfig:
        """Flags win over the environment; defaults are the functions' own."""

        def pick(value: str | None, flag: str, name: str, default: str) -> tuple[str, str]:
            if value is not None:
                return value.strip().rstrip("/"), flag
            return setting(env, name.removeprefix("RELAY_"), default).rstrip("/"), name

        results_uri, results_from = pick(results, "--results", "RELAY_RESULTS_URI", "")
        catalog_uri, catalog_from = pick(catalog, "--catalog", "RELAY_CATALOG_URI", str(DEFAULT_CATALOG))
        policy_uri, policy_from = pick(policy, "--policy", "RELAY_POLICY_URI", "")
        local_root = setting(env, "LOCAL_ROOT", Settings.local_root)
        backend = setting(env, "BACKEND", Settings.backend)
        return cls(
            results_uri,
            catalog_uri or str(DEFAULT_CATALOG),
            local_root,
            results_from,
            catalog_from,
            policy_uri,
            policy_from if policy_uri else f"{catalog_from}'s {naming.POLICY_ENTRY}.yaml",
            backend,
        )

    def require_results(self) -> str:
        """The results location; a UsageError when it is unset or names a folder that does not exist."""
        if not self.results_uri:
            raise UsageError(
                "RELAY_RESULTS_URI: expected gs://bucket/prefix or a local folder holding the run records "
                "(or --results), found nothing"
            )
        _check_location(self.results_uri, self.results_from, "the run records")
        return self.results_uri

    def require_catalog(self) -> str:
        _check_location(self.catalog_uri, self.catalog_from, "compiled pipeline specs <name>.yaml")
        return self.catalog_uri

    @property
    def policy_location(self) -> str:
        """Where the functions read the policy: RELAY_POLICY_URI, else the catalog's policy.yaml."""
        return self.policy_uri or naming.catalog_entry(self.catalog_uri, naming.POLICY_ENTRY)


def _check_location(uri: str, source: str, holding: str) -> None:
    if uri.startswith("gs://"):
        if not uri.removeprefix("gs://").split("/", 1)[0]:
            raise UsageError(f"{source}: expected gs://bucket[/prefix], found {uri!r}")
        return
    if not local_path(uri).is_dir():
        raise UsageError(f"{source}: expected gs://bucket/prefix or a local folder of {holding}, found no folder {uri}")


@dataclass(frozen=True)
class Context:
    """What every command gets: the environment, and the ports tests may replace."""

    env: Mapping[str, str]
    store: BlobStore | None = None  # None: Cloud Storage (or its emulator) for gs://, the disk for paths
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @property
    def paint(self) -> Paint:
        """Colour for what a command prints on stdout, if a person reads it there (see `colour_wanted`)."""
        return Paint(colour_wanted(sys.stdout, self.env))

    @property
    def paint_errors(self) -> Paint:
        """The same for stderr, where problems that stop a command go."""
        return Paint(colour_wanted(sys.stderr, self.env))

    def config(self, *, results: str | None = None, catalog: str | None = None, policy: str | None = None) -> CliConfig:
        return CliConfig.from_env(self.env, results=results, catalog=catalog, policy=policy)

    def blob_store(self, config: CliConfig, *uris: str) -> BlobStore:
        """One store for every URI a command meets (`uris`: records, catalog entries, trigger objects)."""
        if self.store is not None:
            return self.store
        if any(uri.startswith("gs://") for uri in uris):
            check_emulator(self.env, "STORAGE_EMULATOR_HOST")
        # Local folders are only read here, so without a results folder any lock folder will do.
        return results_store(config.results_uri or config.local_root, config.local_root)
