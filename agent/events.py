"""The event stream of a session (defined in `trajectories.events`, re-exported here)."""

from trajectories.events import *  # noqa: F403
from trajectories.events import Event, parse_event  # noqa: F401
