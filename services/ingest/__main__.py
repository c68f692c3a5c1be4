"""``python -m services.ingest ...`` runs the ingest CLI (same as ``marquee ingest ...``)."""

import sys

from services.ingest.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
