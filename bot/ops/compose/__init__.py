"""Compose files loaded, interpolated and merged the way `docker stack deploy` does.

Debian's docker 20.10 CLI has no `docker stack config` (it came with 24.0), and no
maintained Python library loads compose v3 files for swarm (docker-compose v1 is
unmaintained and pins old dependencies), so this follows the CLI's own loader; a
golden test (tests/integration/test_compose_golden.py) holds it to docker 28's
`docker stack config` over real Co-op Cloud recipes. The bot needs the merged
result before deploying: to validate the files, and to know the images to check
and pin, the secrets to check, and the services to label.

The layers, each its own module: yamlgo (YAML as the CLI's Go library reads it),
interpolate (variables and type casts), schema (the structure checked), normalise
(short syntax to long, env_file, paths kept inside the recipe), merge (overlays in
COMPOSE_FILE order), loader (load_compose, which runs them in that order).
"""

from bot.ops.compose.loader import load_compose
from bot.ops.compose.problems import ComposeError

__all__ = ["ComposeError", "load_compose"]
