"""`python -m cxrkit` runs the command line."""

from cxrkit.cli import main

main()
