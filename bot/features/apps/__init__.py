"""Apps on the swarm.

- inventory.py: which apps there are (abra's .env files), what each runs, their secrets;
- cmd.py: `!cmd`, a function of the recipe's abra.sh run in the app's container;
- changes.py: the plan of a deploy (what changes), one text for dry runs and proposals;
- deploy.py: `Apps`, which deploys (named steps: pre-flight, deploy, converge, record or
  roll back), rolls back and undeploys.

Commands see the adapters' vocabulary only through here: the argument converters
for domains and versions, and the types they show.
"""

from __future__ import annotations

from bot.features.apps.cmd import CmdResult, run_function
from bot.features.apps.deploy import Apps, Steps
from bot.features.apps.inventory import Deployed, SecretState, deployed_from
from bot.ops.abra import AppEnv, check_domain, check_recipe, check_version
from bot.ops.swarm import ServiceInfo

__all__ = [
    "AppEnv",
    "Apps",
    "CmdResult",
    "Deployed",
    "SecretState",
    "ServiceInfo",
    "Steps",
    "check_domain",
    "check_recipe",
    "check_version",
    "deployed_from",
    "run_function",
]
