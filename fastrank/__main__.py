"""``python -m fastrank`` runs the command line."""

from fastrank.cli import main

main()
