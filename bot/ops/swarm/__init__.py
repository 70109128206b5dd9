"""Docker Swarm adapter: state through the docker SDK, deploys through the docker CLI.

A thin shell around pure cores:
- model.py: the data (ServiceInfo, TaskInfo, Convergence, SwarmError, task states);
- parse.py: the SDK's JSON as that data (and stack names, image refs, times);
- convergence.py: when a stack is converged, pending, failed or rolled back
  (`evaluate()` for one snapshot, `ConvergenceWatch` for a series of them);
- client.py: `Swarm`, the only part that talks to the daemon or runs the CLI.
- `docker stack config` does not exist in Debian's 20.10 CLI (it came with 24.0), so
  `Swarm.config()` uses bot.ops.compose.load_compose, which follows the CLI's loader.

Facts checked on dockerd 20.10 (single node):
- Task JSON has no spec version. The daemon's (undocumented, used by the CLI's own
  progress code) task filter `_up-to-date=true` returns the tasks whose spec matches
  the service's current spec; it works without a service filter. Comparing images is
  not enough: a changed command keeps the image, and old tasks stay `running` until the
  updater reaches them. So the adapter lists all tasks, then the up-to-date ones, and
  marks `TaskInfo.up_to_date`.
- Every `docker stack deploy` updates every service of the stack: UpdateStatus is reset
  to none and PreviousSpec is set, even for services whose spec did not change. A
  label-only change leaves the tasks up to date (nothing restarts).
- A failed update with `failure_action: rollback` ends in `rollback_completed` within a
  few seconds, and swarm then drops PreviousSpec. A manual rollback (`docker service
  rollback`) swaps Spec and PreviousSpec instead, so rolling back twice rolls forward:
  `rollback()` skips services already rolled back.
- The tasks of a failed update stop being up to date once swarm rolled back; their
  errors are found by time (task status timestamp >= UpdateStatus.StartedAt).
- `docker stack rm` returns at once; the stack's networks go ~4 s later.
"""

from bot.labels import NAMESPACE_LABEL, UpdateState
from bot.ops.swarm.client import DOCKER_CLI, Swarm
from bot.ops.swarm.convergence import ConvergenceWatch, describe_pending, evaluate
from bot.ops.swarm.execfile import exec_with_files
from bot.ops.swarm.model import (
    ACTIVE_STATES,
    FAILED_STATES,
    RECENT_ERRORS,
    Convergence,
    ServiceInfo,
    Status,
    SwarmError,
    TaskInfo,
)
from bot.ops.swarm.parse import group, parse_ts, service_info, task_info
from bot.ops.swarm.parts import SpecSummary, StackParts, spec_summary, stack_parts, stack_specs
from bot.ops.swarm.placement import (
    NodeInfo,
    Placement,
    Stranded,
    compose_placements,
    eligible,
    find_node,
    stranded,
)

__all__ = [
    "ACTIVE_STATES",
    "DOCKER_CLI",
    "FAILED_STATES",
    "NAMESPACE_LABEL",
    "RECENT_ERRORS",
    "Convergence",
    "ConvergenceWatch",
    "NodeInfo",
    "Placement",
    "ServiceInfo",
    "SpecSummary",
    "StackParts",
    "Status",
    "Stranded",
    "Swarm",
    "SwarmError",
    "TaskInfo",
    "UpdateState",
    "compose_placements",
    "describe_pending",
    "eligible",
    "evaluate",
    "exec_with_files",
    "find_node",
    "group",
    "parse_ts",
    "service_info",
    "spec_summary",
    "stack_parts",
    "stack_specs",
    "stranded",
    "task_info",
]
