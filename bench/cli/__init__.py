"""`bench` command line: the commands live in run_commands, speed_commands and report_commands; this
module is the entry point (exit codes, Ctrl-C and SIGTERM)."""

from __future__ import annotations

import typer

from bench.cli import report_commands, run_commands, speed_commands  # noqa: F401  (registers the commands)
from bench.cli.common import app
from bench.errors import BenchError
from bench.train.distributed import end_process, leave

INTERRUPTED = "interrupted: nothing was recorded for the unfinished run"
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT, 128 + SIGTERM, as a shell reports them
_terminated: list[int] = []


def _terminate_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM (kill, a scheduler's time limit, docker stop) unwinds as Ctrl-C does, so the same `finally`
    blocks release the locks and no partial record is written; only the exit code differs."""
    _terminated.append(signum)
    raise KeyboardInterrupt


def _interrupted_code() -> int:
    typer.echo(INTERRUPTED, err=True)
    return EXIT_TERMINATED if _terminated else EXIT_INTERRUPTED


def _click_exceptions(name: str) -> tuple[type[BaseException], ...]:
    """The class `name` from click and from the copy of click that typer bundles (typer >= 0.25 raises
    its own copies, which `except click.X` would miss)."""
    import click

    modules: list = [click.exceptions]
    try:
        from typer._click import exceptions as bundled

        modules.append(bundled)
    except ImportError:  # an older typer that uses click itself
        pass
    return tuple(cls for module in modules if (cls := getattr(module, name, None)) is not None)


def main() -> None:
    """Exit codes: 0 done, 1 a check said no (e.g. `run --dry-run`), 2 bad input or usage, 130 Ctrl-C,
    143 SIGTERM."""
    import signal

    from bench.train.progress import quiet_third_party_output

    quiet_third_party_output()  # in a log: no third-party bars, no warnings known to be harmless here

    signal.signal(signal.SIGTERM, _terminate_like_ctrl_c)
    try:
        code = _exit_code()
    except BaseException:  # an unforeseen error keeps its traceback; an nccl rank still leaves its group
        leave()
        raise
    # A torchrun rank ends here once the whole command is done (--seeds and demo run several runs in one
    # group), without the interpreter's teardown.
    end_process(code)


def _exit_code() -> int:
    try:
        code = app(standalone_mode=False, prog_name="bench")
    except BenchError as error:
        typer.echo(f"error: {error}", err=True)
        return 2
    except (KeyboardInterrupt, *_click_exceptions("Abort")):
        return _interrupted_code()
    except _click_exceptions("ClickException") as error:
        error.show()  # click's short usage message, no traceback
        return error.exit_code
    except _click_exceptions("Exit") as error:
        return error.exit_code
    # Without standalone mode typer returns Ctrl-C as 130 and typer.Exit(n) as n instead of raising.
    if code == EXIT_INTERRUPTED:
        code = _interrupted_code()
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
