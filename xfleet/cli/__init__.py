"""The `xfleet` command line: a thin click face over the xfleet library.

xfleet/cli/main.py holds the root group and the entry point, output.py what every command
shares (context, options, output), and each other module one group of commands."""

from xfleet.cli.main import cli as cli
from xfleet.cli.main import main as main
