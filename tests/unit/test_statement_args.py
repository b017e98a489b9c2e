"""A compiled statement turns named parameters into the driver's positional arguments: values
bound in the statement itself fill in (and a parameter of the same name overrides them), bind
processors convert non-null values, and a missing parameter is named."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, insert, update
from sqlalchemy.dialects import sqlite

from numgate.db.direct import Statement

t = Table(
    "t",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(10)),
    Column("flag", Boolean),
    Column("n", Integer, default=7),
)
DIALECT = sqlite.dialect()


def test_statement_literals_fill_in_and_parameters_come_in_order() -> None:
    c = Statement(
        update(t).where(t.c.id == bindparam("b_id")).values(name=bindparam("b_name"), n=3)
    ).compiled(DIALECT)
    assert c.sql == "UPDATE t SET name=?, n=? WHERE t.id = ?"
    assert c.args({"b_id": 5, "b_name": "x"}) == ("x", 3, 5)


ROW_INSERT = Statement(insert(t).values(id=bindparam("id"), name=bindparam("name")))


def test_a_column_default_is_used_unless_the_row_gives_the_column() -> None:
    c = ROW_INSERT.compiled(DIALECT)
    assert c.sql == "INSERT INTO t (id, name, n) VALUES (?, ?, ?)"
    assert c.args({"id": 1, "name": "a"}) == (1, "a", 7)
    assert c.args({"id": 1, "name": "a", "n": 9}) == (1, "a", 9)


def test_bind_processors_convert_values_and_pass_nulls() -> None:
    c = Statement(insert(t).values(flag=bindparam("f"), id=bindparam("i"))).compiled(DIALECT)
    assert c.processors  # SQLite's Boolean processor
    args = c.args({"f": True, "i": 2})
    assert args[:2] == (2, 1) and type(args[1]) is int
    assert c.args({"f": None, "i": 2})[:2] == (2, None)


def test_a_row_of_the_driver_is_taken_as_parameters() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT 4 AS id, 'b' AS name").fetchone()
    assert ROW_INSERT.compiled(DIALECT).args(row) == (4, "b", 7)


def test_a_missing_parameter_is_named() -> None:
    c = Statement(update(t).where(t.c.id == bindparam("b_id")).values(name=bindparam("b_name"))).compiled(
        DIALECT
    )
    with pytest.raises(TypeError, match="statement parameters missing: b_name"):
        c.args({"b_id": 1})


def test_a_parameter_missing_from_a_driver_row_is_named_by_its_keys() -> None:
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT 4 AS id, 'name' AS other").fetchone()  # 'name' only as a value
    with pytest.raises(TypeError, match="statement parameters missing: name\n"):
        ROW_INSERT.compiled(DIALECT).args(row)
