"""Build the packed ZIP table shipped in ``service/planning/zips.tsv.gz``.

    python -m service.tools.zipdata        # rewrite the table from ``zipcodes``

The ``zipcodes`` package is the ZIP database (SPEC 5.2, 14); loading it takes
about two seconds and ~140 MB of small objects in every process that plans a
contact. The planner reads this packed copy instead: every five-digit ZIP with
its state and IANA time zone (empty when the package gives none), sorted, one
``zip<TAB>state<TAB>zone`` line each, gzip-compressed. A test checks that the
shipped table equals what this module builds from the installed package; run
this module again after upgrading ``zipcodes``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parent.parent / "planning" / "zips.tsv.gz"


def table_text() -> str:
    """The table's text, from the installed ``zipcodes`` package."""
    import zipcodes

    list_all: Any = zipcodes._zipcodes.list_all
    rows = sorted({(e["zip_code"], e["state"], e.get("timezone") or "") for e in list_all()})
    return "".join(f"{z}\t{s}\t{t}\n" for z, s, t in rows)


def write_table(path: Path = TABLE) -> int:
    """Write the table (deterministic bytes: no name or time in the gzip header)."""
    data = gzip.compress(table_text().encode("ascii"), compresslevel=9, mtime=0)
    path.write_bytes(data)
    return len(data)


def main() -> int:
    size = write_table()
    import sys

    sys.stdout.write(f"wrote {TABLE} ({size:,} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
