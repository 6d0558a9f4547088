"""The one error type the configuration stage raises, with messages a user can act on."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value that cannot work. The message names the key, the value, the limit and a fix.

    Several independent problems are reported together, one per line, so a user fixes them in
    one pass instead of one run per mistake.
    """

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            message = self.problems[0]
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"{len(self.problems)} config errors:\n{lines}"
        super().__init__(message)


# The exit status of a Hydra app whose config fails validation.
EXIT_CONFIG_ERROR = 2
# ... and of one whose command line cannot be composed (unknown key or option), as Hydra's own.
EXIT_COMPOSE_ERROR = 1


def exit_on_config_error(run: Callable[[], T], status: int = EXIT_CONFIG_ERROR) -> T:
    """`run()`, but a ConfigError ends the process with its message and `status` (no
    traceback) unless HYDRA_FULL_ERROR=1 asks for one: the apps' shared entry guard."""
    try:
        return run()
    except ConfigError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Config error: {e}", file=sys.stderr)
        sys.exit(status)
