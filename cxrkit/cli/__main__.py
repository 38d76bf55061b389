"""`python -m cxrkit.cli ...`: what `accelerate launch -m cxrkit.cli pretrain ...` runs."""

from cxrkit.cli import main

main()
