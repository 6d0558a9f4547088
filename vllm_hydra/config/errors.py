"""The one error type the configuration stage raises, with messages a user can act on."""

from __future__ import annotations


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
