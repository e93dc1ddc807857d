"""Whole numbers read as written (unlearning.numbers) and the counts, retentions and indexes read
through them: int() also reads '1_0' as 10, '٣' as 3 and ' 3' as 3, so each reader says which of
those it takes."""

import pytest

from tasks.common import whole_number_option
from unlearning.compliance.purge import check_keep_days
from unlearning.errors import UnlearnError
from unlearning.numbers import whole_number_as_written


@pytest.mark.parametrize("value", ["0", "3", " 30 ", "03", 7, "3650"])
def test_ascii_digits_are_the_number_they_write(value):
    assert whole_number_as_written(value) == int(str(value).strip())


@pytest.mark.parametrize("value", ["+3", "-3", "3.0", 3.0, "1_0", "٣", "３", "²", "", "three", None, True])
def test_anything_else_is_no_whole_number(value):
    assert whole_number_as_written(value) is None


@pytest.mark.parametrize("value", ["3", 3, " 3 "])
def test_a_count_as_written(value):
    assert whole_number_option(value, "--workers") == 3


# '03' and '+3' are refused by the count's own rule (one way of writing it), the rest as not ASCII digits
@pytest.mark.parametrize("value", ["03", "+3", "٣", "1_0", "0", "2.5", 3.0, True, None])
def test_a_count_not_as_written_is_refused(value):
    with pytest.raises(UnlearnError, match=r"--workers must be a whole number ≥ 1, got "):
        whole_number_option(value, "--workers")


@pytest.mark.parametrize("value", ["03", " 3"])
def test_a_retention_keeps_its_leading_zeros_and_spaces(value):
    assert check_keep_days(value) == 3
