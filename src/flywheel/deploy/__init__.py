"""Deploy owns agent versions and who serves which session: content-addressed
versions, the stable version and canary of each workload, sticky routing,
promotion and rollback (each audited), and the live canary comparison that
decides them (``flywheel.deploy.live``)."""

from flywheel.deploy.versions import (
    config_diff,
    create_version,
    deployment,
    get_version,
    list_versions,
    promote,
    rollback,
    route,
    set_canary,
)

__all__ = [
    "config_diff",
    "create_version",
    "deployment",
    "get_version",
    "list_versions",
    "promote",
    "rollback",
    "route",
    "set_canary",
]
