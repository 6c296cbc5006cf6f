"""The schema lock's answer: only GET_LOCK's 1 lets a migration run."""

import pytest

from passerelle.schemalock import SchemaLockBusy, acquire_schema_lock, lock_answer_held


@pytest.mark.parametrize(
    ("rows", "held"),
    [
        (((1,),), True),
        ([(1,)], True),
        (((0,),), False),  # another session kept it for the whole wait
        (((None,),), False),  # an error on the server
        ((), False),
        (None, False),
        (((),), False),
    ],
)
def test_lock_answer(rows, held):
    assert lock_answer_held(rows) is held


class Cursor:
    def __init__(self, answer):
        self.answer = answer
        self.sent = []

    def execute(self, sql, params=()):
        self.sent.append((sql, params))

    def fetchall(self):
        return self.answer


def test_busy_lock_raises_with_the_lock_name_and_wait():
    cur = Cursor(((0,),))
    with pytest.raises(SchemaLockBusy, match=r"'passerelle_x_schema' not obtained within 2.5 s"):
        acquire_schema_lock(cur, "passerelle_x_schema", 2.5)
    assert cur.sent == [("SELECT GET_LOCK(%s, %s)", ("passerelle_x_schema", 2.5))]


def test_held_lock_returns():
    acquire_schema_lock(Cursor(((1,),)), "passerelle_x_schema")
