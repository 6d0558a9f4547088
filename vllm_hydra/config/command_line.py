"""What the user typed, checked where Hydra alone would accept it or fail obscurely.

serve.py calls these around `@hydra.main`: overrides against the schema (with a did-you-mean)
before composing, `local=<name>` that names a file, and `--cfg` output with secrets redacted.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Iterator

from vllm_hydra.config.errors import ConfigError
from vllm_hydra.config.schema_keys import override_problems
from vllm_hydra.config.secrets import redact_text
from vllm_hydra.config.vllm import ServeConfig

# Optional config groups whose default option may be absent (your own gitignored settings);
# any other option named on the command line must exist.
OPTIONAL_GROUPS = {"local": "default"}


def parse_command_line(argv: list[str]) -> tuple[list[str], bool]:
    """(the overrides, whether Hydra will print a config: --cfg/-c)."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    return list(args.overrides), args.cfg is not None


def check_command_line(root: type, argv: list[str]) -> None:
    """Raise ConfigError for every override that names no schema key."""
    overrides, _ = parse_command_line(argv)
    problems = override_problems(root, overrides)
    if problems:
        raise ConfigError(problems)


def check_optional_choices() -> None:
    """`local=typo` would be dropped silently (the slot is optional); refuse it instead."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    choices = HydraConfig.get().runtime.choices
    loader = GlobalHydra.instance().config_loader()
    for group, default in OPTIONAL_GROUPS.items():
        chosen = choices.get(group)
        if chosen in (None, default):
            continue
        options = loader.get_group_options(group)
        if chosen not in options:
            listed = ", ".join(options) or f"none yet: create conf/{group}/{chosen}.yaml"
            raise ConfigError(
                f"{group}={chosen}: no such option in conf/{group}/ (available: {listed}). "
                f"Fix the name, or drop {group}= to use conf/{group}/{default}.yaml if present."
            )


def _asks_for_help(argv: list[str]) -> bool:
    return any(a in ("--help", "-h") for a in argv)


def print_help(argv: list[str]) -> None:
    """serve.py's own page (config/help.py); `--help <section>` for one section."""
    from vllm_hydra.config.help import help_page

    index = next(i for i, a in enumerate(argv) if a in ("--help", "-h"))
    following = argv[index + 1 : index + 2]
    named = following and not following[0].startswith("-") and "=" not in following[0]
    section = following[0] if named else None
    try:
        sys.stdout.write(help_page(section))
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        sys.exit(1)


@contextlib.contextmanager
def redacted_stdout(enabled: bool) -> Iterator[None]:
    """Hydra's `--cfg` prints the config (resolved with --resolve); print it redacted."""
    if not enabled:
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        sys.stdout.write(redact_text(buffer.getvalue()))


def run_hydra_app(root: type, argv: list[str], main: Callable[[], None]) -> None:
    """The checks that come before Hydra composes, then the app itself."""
    from vllm_hydra.config.errors import EXIT_COMPOSE_ERROR, exit_on_config_error

    if root is ServeConfig and _asks_for_help(argv):
        print_help(argv)
        return
    exit_on_config_error(lambda: check_command_line(root, argv), status=EXIT_COMPOSE_ERROR)
    _, prints_config = parse_command_line(argv)
    with redacted_stdout(prints_config):
        main()
