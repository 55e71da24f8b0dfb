"""``python -m fastrank.bench [OPTIONS]``: the same as ``fastrank bench [OPTIONS]``."""

import sys

from fastrank.cli import cli


def main() -> None:
    cli.main(["bench", *sys.argv[1:]], prog_name="fastrank")


if __name__ == "__main__":
    main()
