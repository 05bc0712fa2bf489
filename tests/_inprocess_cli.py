"""Run `engines ARGS` through engines.cli.main in this process.

The same parser and command functions as the installed `engines` script, with
exactly the environment the subprocess would have had, but without starting a
Python and re-importing the package for every call (about a second each). Each
test file that drives a command this way keeps one call of the real script as
a subprocess, so the entry point itself stays tested end to end.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from unittest import mock

from engines.cli import main
from engines.config import get_settings


def call_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`engines ARGS` with `env` as the whole environment; returns what a subprocess would."""
    out, err = io.StringIO(), io.StringIO()
    with (mock.patch.dict(os.environ, env, clear=True),
          contextlib.redirect_stdout(out), contextlib.redirect_stderr(err)):
        get_settings.cache_clear()  # settings are read from this call's environment
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's usage errors, as the script exits
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            get_settings.cache_clear()
    return subprocess.CompletedProcess(["engines", *args], code, out.getvalue(), err.getvalue())
