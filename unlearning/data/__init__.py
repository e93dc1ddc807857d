"""Datasets: validated tables (`tables`), their encoding into X (`encoding`), built-ins (`builtin`)."""

from unlearning.data.encoding import Encoder
from unlearning.data.tables import (
    RECORDS_FILE,
    SCHEMA_FILE,
    Table,
    correct_table,
    load_table,
    read_table_file,
    save_table,
    table_from_frame,
)

__all__ = [
    "RECORDS_FILE",
    "SCHEMA_FILE",
    "Encoder",
    "Table",
    "correct_table",
    "load_table",
    "read_table_file",
    "save_table",
    "table_from_frame",
]
