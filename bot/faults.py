"""Named fault-injection points, for the fault suite (tests/faults).

`fault_point("deploy.stack_deployed")` does nothing at all unless the environment
names that point: COOPBOT_FAULT=<name>[,<name>...], or COOPBOT_FAULT_FILE=<path> of a
file holding such names (read at each call, so a test can arm a point in a running
bot). When the point is named, the process kills itself with SIGKILL there: no
`finally`, no shutdown, no flush, as a power cut or the OOM killer would stop it.

A file-armed point fires once: the file is emptied first, so the bot started again
on the same environment does not die at the same step.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "COOPBOT_FAULT"
ENV_FILE = "COOPBOT_FAULT_FILE"


def _armed(name: str) -> bool:
    names = os.environ.get(ENV, "")
    if name in {n.strip() for n in names.split(",")}:
        return True
    path = os.environ.get(ENV_FILE)
    if not path:
        return False
    try:
        text = Path(path).read_text()
    except OSError:
        return False
    if name not in {n.strip() for n in text.replace(",", "\n").splitlines()}:
        return False
    Path(path).write_text("")  # fires once: the restarted bot goes past this step
    return True


def fault_point(name: str) -> None:
    """SIGKILL this process here if the environment names this point; else nothing."""
    if not os.environ.get(ENV) and not os.environ.get(ENV_FILE):
        return  # the normal case: one dict lookup per step
    if _armed(name):
        log.warning("fault point %s: killing the process (SIGKILL)", name)
        os.kill(os.getpid(), signal.SIGKILL)
