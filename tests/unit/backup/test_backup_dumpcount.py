"""Rows per table read from a mariadb-dump stream."""

from __future__ import annotations

import pytest

from passerelle.backup.dumpcount import DumpCounter, DumpFormatError, count_tuples

DUMP = b"""-- MariaDB dump 10.19
/*!40101 SET NAMES utf8mb4 */;
DROP TABLE IF EXISTS `greylist`;
CREATE TABLE `greylist` (
  `k` binary(16) NOT NULL,
  PRIMARY KEY (`k`)
) ENGINE=InnoDB;
LOCK TABLES `greylist` WRITE;
INSERT IGNORE INTO `greylist` VALUES (0x0102,'1.2.3.4','a),(b',1),(0x03,'it\\'s (x)','\\\\',2);
INSERT IGNORE INTO `greylist` VALUES (0x04,'x','y',3);
UNLOCK TABLES;
CREATE TABLE `empty` (
  `a` int
) ENGINE=InnoDB;
CREATE TABLE `we``ird` (
  `a` int
);
INSERT INTO `we``ird` VALUES (1),(2);
INSERT INTO `rows` VALUES
(1,'a\\\\'),
(2,'(\\n)'),
(3,NULL);
-- Dump completed on 2025-01-01  2:53:20
"""


@pytest.mark.parametrize(
    ("values", "rows"),
    [
        (b"(1);", 1),
        (b"(1),(2),(3);", 3),
        (b"('a),(b'),('c');", 2),
        (b"('it\\'s'),('\\\\'),(NULL);", 3),
        (b"(0x28292829,'(');", 1),
    ],
)
def test_count_tuples(values, rows):
    assert count_tuples(values) == rows


@pytest.mark.parametrize("bad", [b"('open);", b"(1;", b"1),(2;"])
def test_count_tuples_refuses_a_broken_line(bad):
    with pytest.raises(DumpFormatError):
        count_tuples(bad)


@pytest.mark.parametrize("chunk", [1, 7, 64, len(DUMP)])
def test_counter_in_any_chunks(chunk):
    c = DumpCounter()
    for i in range(0, len(DUMP), chunk):
        c.feed(DUMP[i : i + chunk])
    assert c.finish() == {"greylist": 3, "empty": 0, "we`ird": 2, "rows": 3}


def test_a_dump_cut_inside_a_statement_is_refused():
    c = DumpCounter()
    c.feed(b"INSERT INTO `t` VALUES\n(1),\n")
    with pytest.raises(DumpFormatError, match="inside an INSERT"):
        c.finish()


def test_a_cut_dump_is_refused():
    c = DumpCounter()
    c.feed(DUMP.split(b"-- Dump completed")[0])
    with pytest.raises(DumpFormatError, match="cut"):
        c.finish()
