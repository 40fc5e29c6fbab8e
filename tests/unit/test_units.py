"""One way to write a byte count: three significant figures in decimal units, carried up at the rounding edge."""

import pytest

from sensor.units import byte_size


@pytest.mark.parametrize(("nbytes", "shown"), [
    (0, "0 B"), (812, "812 B"), (999.4, "999 B"),
    (999.6, "1.00 kB"),             # would round to "1000 B"
    (5_300, "5.30 kB"), (53_200, "53.2 kB"), (530_000, "530 kB"),
    (999_600, "1.00 MB"), (1_410_000, "1.41 MB"), (12_345_678, "12.3 MB"),
    (4.2e9, "4.20 GB"), (1e13, "10.0 TB"),
    (1e19, "10000 PB"),             # the last unit takes whatever is left
])
def test_byte_size(nbytes: float, shown: str) -> None:
    assert byte_size(nbytes) == shown
