"""Unit tests for filter_plugins/passerelle_sizing.py: every formula at the named profiles
(numbers worked out by hand from the table in docs/sizing.md) and at edge values, the overrides, the
memory plan and its check."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from plugins import load

ROOT = Path(__file__).resolve().parents[2]
ps = load("filter_plugins/passerelle_sizing.py")

sizing = ps.passerelle_sizing


def test_filter_module_exports():
    assert set(ps.FilterModule().filters()) == {
        "passerelle_sizing",
        "passerelle_memory_fits",
        "passerelle_milter_memory_max_mb",
    }


# --- the reference's gateway: gwx-2008, 4 cores, 4096 MB ------------------------------------
# fixed: os 256 + 3 milters x 50 + spamd parent 100 + clamd database 1200 = 1706
# left 2390, weights sendmail 3 + spamd 4 + clamd 3 + reserve 2 = 12 -> 199.17 MB a weight
def test_gwx_2008_gateway():
    s = sizing("gwx-2008", ["gateways"])
    assert (s["cores"], s["memory_mb"]) == (4, 4096)
    # sendmail: 597.5 / 8 = 74 processes - 16 queue runners = 58 (cap 50 x 4 = 200)
    assert s["sendmail"] == {
        "max_daemon_children": 58,
        "queue_la": 20,
        "refuse_la": 30,
        "connection_rate_throttle": 200,
        "max_queue_children": 16,
        "max_runners_per_queue": 8,
    }
    # spamd: 796.7 / 100 = 7 (cap 3 x 4 = 12), a third pre-forked, every idle one kept
    assert s["spamd"] == {"max_children": 7, "min_children": 2, "max_spare": 7}
    # clamd: 597.5 / 100 = 5 (cap 16); 4 GB < 8 GB: no concurrent reload
    assert s["clamd"] == {"max_threads": 5, "concurrent_reload": False}
    assert s["greylist"] == {"store_threads": 8}
    assert s["memory"] == {
        "os": 256,
        "milters": 150,
        "sendmail": (58 + 16) * 8,
        "spamd": 100 + 7 * 100,
        "clamd": 1200 + 5 * 100,
        "mariadb": 0,
        "total": 256 + 150 + 592 + 800 + 1700,
    }
    assert s["fits"] is True
    assert s["services"] == [
        "antivirus",
        "clamd",
        "greylist",
        "sendmail",
        "spam_milter",
        "spamd",
    ]


# --- the reference's outbound relay: smtpx-2008, 1 core, 2048 MB ----------------------------
# fixed: os 256 + antivirus milter 50 + clamd database 1200 = 1506; left 542;
# weights sendmail 3 + clamd 3 + reserve 2 = 8 -> 67.75 MB a weight
def test_smtpx_2008_smtpx():
    s = sizing("smtpx-2008", ["smtpx"])
    # 203.25 / 8 = 25 processes - 4 queue runners = 21
    assert s["sendmail"]["max_daemon_children"] == 21
    assert s["sendmail"]["queue_la"] == 8
    assert s["sendmail"]["refuse_la"] == 12
    assert s["sendmail"]["connection_rate_throttle"] == 50
    assert s["sendmail"]["max_queue_children"] == 4
    assert s["sendmail"]["max_runners_per_queue"] == 2
    assert s["clamd"]["max_threads"] == 2
    assert s["memory"]["total"] == 256 + 50 + (21 + 4) * 8 + 1200 + 2 * 100 == 1906
    assert s["fits"] is True


def test_a_2008_relay_cannot_be_a_gateway():
    # Today's signature database and spamd do not fit in 2 GB beside sendmail: the floors
    # (10 children, 2 spamd children, 2 clamd threads) push the plan over.
    s = sizing("smtpx-2008", ["gateways"])
    assert s["fits"] is False
    assert s["memory"]["total"] > 2048
    with pytest.raises(AnsibleFilterError, match=r"gwx9: planned memory \d+ MB exceeds its 2048"):
        ps.passerelle_memory_fits(s, "gwx9")


def test_small_2024_lab_hosts():
    gw = sizing("small-2024", ["gateways"])
    # same memory as gwx-2008, 2 cores: 74 - 8 = 66 children, spamd capped at 3 x 2 = 6
    assert gw["sendmail"]["max_daemon_children"] == 66
    assert gw["spamd"] == {"max_children": 6, "min_children": 2, "max_spare": 6}
    assert gw["clamd"]["max_threads"] == 5
    assert gw["greylist"]["store_threads"] == 4
    # smtpx: fixed 1506, left 2590 / 8 = 323.75 a weight: 971 / 8 = 121 - 8 -> cap 100
    sx = sizing("small-2024", ["smtpx"])
    assert sx["sendmail"]["max_daemon_children"] == 100
    assert sx["clamd"]["max_threads"] == 8  # 971 / 100 = 9, capped at 4 x 2
    # mailstore: fixed 256, left 3840 / 5 -> 2304 / 8 = 288 - 8 -> cap 100
    assert sizing("small-2024", ["mailstores"])["sendmail"]["max_daemon_children"] == 100


def test_database_host_buffers():
    # fixed: os 256 + MariaDB 256 + 2 x 64 temporary tables = 640; left 3456;
    # weights mariadb 6 + reserve 2: pool 2592 -> 2560 (multiple of 128)
    s = sizing("gwx-2008", ["greylist_db"])
    assert s["mariadb"] == {
        "innodb_buffer_pool_size_mb": 2560,
        "innodb_log_file_size_mb": 640,
        "tmp_table_size_mb": 64,
    }
    assert s["memory"]["mariadb"] == 256 + 128 + 2560
    assert s["memory"]["total"] == 256 + 256 + 128 + 2560 == 3200


def test_large_2024_is_capped_by_cores():
    s = sizing("large-2024", ["gateways"])
    assert s["sendmail"]["max_daemon_children"] == 800  # 50 x 16
    assert s["spamd"] == {"max_children": 48, "min_children": 16, "max_spare": 48}
    assert s["clamd"] == {"max_threads": 64, "concurrent_reload": True}
    assert s["greylist"]["store_threads"] == 16
    assert s["memory"]["clamd"] == 2 * 1200 + 64 * 100
    db = sizing("large-2024", ["greylist_db"])
    assert db["mariadb"]["innodb_log_file_size_mb"] == 2048
    assert db["mariadb"]["tmp_table_size_mb"] == 256


# --- edge values ----------------------------------------------------------------------------
def test_floors_on_the_smallest_host():
    s = sizing({"cores": 1, "memory_mb": 512}, ["gateways"])
    assert s["sendmail"]["max_daemon_children"] == 10
    assert s["spamd"]["max_children"] == 2
    assert s["spamd"]["min_children"] == 1
    assert s["spamd"]["max_spare"] == 2
    assert s["clamd"]["max_threads"] == 2
    assert s["fits"] is False
    db = sizing({"cores": 1, "memory_mb": 512}, ["greylist_db"])
    assert db["mariadb"]["innodb_buffer_pool_size_mb"] == 128
    assert db["mariadb"]["innodb_log_file_size_mb"] == 64
    assert db["mariadb"]["tmp_table_size_mb"] == 16


def test_concurrent_reload_threshold():
    assert sizing({"cores": 4, "memory_mb": 8191}, "gateway")["clamd"]["concurrent_reload"] is False
    assert sizing({"cores": 4, "memory_mb": 8192}, "gateway")["clamd"]["concurrent_reload"] is True


def test_load_thresholds_grow_with_cores():
    for cores in (1, 2, 8, 64):
        sm = sizing({"cores": cores, "memory_mb": 4096}, "mailstore")["sendmail"]
        assert sm["queue_la"] == 8 + 4 * (cores - 1)
        assert sm["refuse_la"] == 12 + 6 * (cores - 1)
        assert sm["connection_rate_throttle"] == 50 * cores


def test_sendmail_children_ceiling():
    s = sizing({"cores": 128, "memory_mb": 1024 * 1024}, "mailstore")
    assert s["sendmail"]["max_daemon_children"] == 2000


@pytest.mark.parametrize(
    ("groups", "floor_mb"),
    [
        (["gateways"], 2400),
        (["smtpx"], 1900),
        (["mailstores"], 512),
        (["greylist_db"], 1024),
        (["gateways", "greylist_db"], 4096),
        (["smtpx", "mailstores"], 2048),
        ([], 512),
    ],
)
def test_plan_never_exceeds_memory_above_the_floors(groups, floor_mb):
    # Every count is rounded down from its share: once the floors are met, the plan fits,
    # whatever the cores and the memory.
    for cores, memory in itertools.product((1, 2, 3, 4, 8, 16, 64), range(floor_mb, 140_000, 997)):
        s = sizing({"cores": cores, "memory_mb": memory}, groups)
        assert s["fits"], (groups, cores, memory, s["memory"])
        assert s["memory"]["total"] <= memory


def test_kinds_and_groups_agree():
    assert sizing("gwx-2008", "gateway") == sizing("gwx-2008", ["gateways", "unrelated"])
    assert sizing("gwx-2008", ["internet"])["services"] == ["sendmail"]
    assert sizing("gwx-2008", ["ldap"])["memory"]["total"] == 256


def test_a_daemon_outside_the_host_groups_still_gets_values():
    # A role applied on its own (no group) is sized as if its daemon were the host's only one
    # besides the others listed; the plan only counts what the host runs.
    s = sizing("gwx-2008", ["mailstores"])
    assert s["clamd"]["max_threads"] >= 2
    assert s["memory"]["clamd"] == 0


# --- overrides ------------------------------------------------------------------------------
def test_overrides_replace_values_and_count_in_the_plan():
    s = sizing(
        "gwx-2008",
        ["gateways"],
        overrides={
            "sendmail": {"max_daemon_children": "200", "queue_la": ""},
            "spamd": {"max_children": 9},
            "clamd": {"max_threads": None},
        },
    )
    assert s["sendmail"]["max_daemon_children"] == 200
    assert s["sendmail"]["queue_la"] == 20  # "" = formula
    # the idle children kept follow an overridden max_children
    assert s["spamd"] == {"max_children": 9, "min_children": 3, "max_spare": 9}
    assert s["clamd"]["max_threads"] == 5
    assert s["memory"]["sendmail"] == (200 + 16) * 8
    assert s["memory"]["spamd"] == 100 + 900
    assert s["memory"]["total"] == 256 + 150 + 1728 + 1000 + 1700
    assert s["fits"] is False  # 4834 MB in 4096


def test_spamd_max_spare_override_alone():
    """spamd's own default (2 idle children) back: the other limits keep their formula."""
    s = sizing("gwx-2008", ["gateways"], overrides={"spamd": {"max_spare": "2"}})
    assert s["spamd"] == {"max_children": 7, "min_children": 2, "max_spare": 2}
    assert s["memory"]["spamd"] == 100 + 700


def test_mariadb_override_counts_its_own_buffers():
    s = sizing(
        "small-2024",
        ["greylist_db"],
        overrides={"mariadb": {"innodb_buffer_pool_size_mb": 512, "tmp_table_size_mb": 32}},
    )
    assert s["mariadb"]["innodb_buffer_pool_size_mb"] == 512
    assert s["memory"]["mariadb"] == 256 + 64 + 512


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spamd": {"max_children": "many"}}, "spamd max_children must be a positive integer"),
        ({"spamd": {"max_children": 0}}, "spamd max_children must be a positive integer"),
        ({"spamd": {"max_spare": "all"}}, "spamd max_spare must be a positive integer"),
        ({"spamd": {"max_spare": -1}}, "spamd max_spare must be a positive integer"),
        ({"clamd": {"max_threads": True}}, "clamd max_threads must be a positive integer"),
        ({"clamd": {"threads": 4}}, "clamd has no limit 'threads'"),
        ({"postfix": {}}, "no overridable limits for 'postfix'"),
    ],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(AnsibleFilterError, match=message):
        sizing("gwx-2008", "gateway", overrides=overrides)


# --- hardware input -------------------------------------------------------------------------
def test_profiles_from_the_inventory_extend_the_builtin_ones():
    s = sizing("tiny-lab", "mailstore", {"tiny-lab": {"cores": 1, "memory_mb": 1024}})
    assert (s["cores"], s["memory_mb"]) == (1, 1024)


@pytest.mark.parametrize(
    ("hardware", "message"),
    [
        ("gwx-2009", "unknown hardware profile 'gwx-2009'"),
        ({"cores": 0, "memory_mb": 4096}, "cores must be a positive integer, got 0"),
        ({"cores": 2, "memory_mb": "4g"}, "memory_mb must be a positive integer, got '4g'"),
        ({"cores": True, "memory_mb": 4096}, "cores must be a positive integer, got True"),
        ({"cores": 2, "memory_mb": 256}, "256 MB is below the 512 MB"),
        (["gwx-2008"], "hardware must be a mapping"),
    ],
)
def test_bad_hardware_is_named(hardware, message):
    with pytest.raises(AnsibleFilterError, match=message):
        sizing(hardware, "gateway")


def test_bad_kind_is_named():
    with pytest.raises(AnsibleFilterError, match="kind must be one of"):
        sizing("gwx-2008", "relay")


def test_memory_fits_passes_quietly():
    assert ps.passerelle_memory_fits(sizing("gwx-2008", "gateway"), "gw1") is True


def test_milter_memory_max_from_the_plan():
    assert ps.passerelle_milter_memory_max_mb() == 4 * ps.MILTER_MB
    assert ps.passerelle_milter_memory_max_mb(100) == 4 * ps.MILTER_MB + 100
    assert ps.passerelle_milter_memory_max_mb(0, 2) == 2 * ps.MILTER_MB
