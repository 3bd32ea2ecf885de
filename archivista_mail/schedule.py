"""When a scheduled import is due: cron starts the importer every minute, the interval decides."""

from __future__ import annotations

from datetime import datetime, timezone

from .config import Config
from .settings import INTERVAL_SETTING
from .state import State

SLACK_SECONDS = 5  # cron starts us a little after the minute; do not skip a run for that


def interval_minutes(config: Config, state: State) -> int:
    """The interval set in WebAdmin, else the configuration file's."""
    value = state.setting(INTERVAL_SETTING)
    return int(value) if value.isdigit() and int(value) > 0 else config.import_interval_minutes


def import_due(config: Config, state: State, now: datetime | None = None) -> bool:
    """True if no import started within the interval (the first run is always due)."""
    runs = state.runs(1)
    if not runs:
        return True
    last = datetime.strptime(runs[0]["started"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return (now - last).total_seconds() >= interval_minutes(config, state) * 60 - SLACK_SECONDS
