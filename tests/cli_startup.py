"""Whether CLI commands import torch: each check runs in a fresh interpreter, since this one already has it."""

from __future__ import annotations

import subprocess
import sys


def torch_imported_by(*invocations: list[str], expect: str = "") -> bool:
    """Run each ``deblur`` argument list through Click in one fresh interpreter (each must exit 0, and print
    ``expect`` if given); True when torch ended up imported."""
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from deblurcli.cli import group\n"
        f"for args in {list(invocations)!r}:\n"
        "    result = CliRunner().invoke(group, args)\n"
        f"    assert result.exit_code == 0 and {expect!r} in result.output, result.output\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "True"
