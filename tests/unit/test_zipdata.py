"""The packed ZIP table shipped with the planner is the ``zipcodes`` package's data."""

from __future__ import annotations

import gzip

from service.planning.contacts import zip_lookup
from service.tools.zipdata import TABLE, table_text


def test_shipped_table_equals_the_package() -> None:
    # Rebuilt from the installed package, line for line; if this fails after a
    # zipcodes upgrade, run `python -m service.tools.zipdata`.
    assert gzip.decompress(TABLE.read_bytes()).decode("ascii") == table_text()


def test_lookup_reads_the_packed_table() -> None:
    # 10001 is Manhattan (NY, America/New_York); 99501 Anchorage; 96799 is
    # American Samoa (AS, Pacific/Pago_Pago), all per the zipcodes package.
    ny = zip_lookup("10001")
    assert ny is not None and (ny.state, ny.timezone) == ("NY", "America/New_York")
    ak = zip_lookup("99501-1234")
    assert ak is not None and (ak.state, ak.timezone) == ("AK", "America/Anchorage")
    assert zip_lookup("00000") is None
