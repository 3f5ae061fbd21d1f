"""`coda-train` command line (being built: see the project's issues)."""

import sys


def main(argv=None) -> int:
    print("coda-train: not yet implemented", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
