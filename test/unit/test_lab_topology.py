"""Topology validation of the lab (no daemons)."""

from __future__ import annotations

import pytest
from pglab.topology import TopologyError, load


def test_default_topology_has_the_seven_hosts_and_a_spare():
    topo = load()
    assert [h.name for h in topo.hosts] == ["salt", "pg1", "pg2", "pg3", "pg4", "backup", "app1", "legacy"]
    assert [h.name for h in topo.booted] == ["salt", "pg1", "pg2", "pg3", "backup", "app1", "legacy"]
    assert topo.host("pg4").spare is True and topo.host("pg1").spare is False
    legacy = topo.host("legacy")
    assert legacy.services == ("postgresql.service",) and legacy.setup == "legacy-setup.sh"
    assert topo.master.name == "salt"
    assert all(h.address.startswith("198.18.0.") for h in topo.hosts)


@pytest.mark.parametrize(
    "body, message",
    [
        ("hosts = []", "'hosts' must be a non-empty list"),
        ('[[hosts]]\nname="a"\naddress="198.18.0.2"\n', "exactly one host must have master = true"),
        ('[[hosts]]\nname="A b"\naddress="198.18.0.2"\nmaster=true\n', "hosts[0].name"),
        ('[[hosts]]\nname="a"\naddress="198.18.0.1"\nmaster=true\n', "duplicate address 198.18.0.1"),
        ('[[hosts]]\nname="a"\naddress="nope"\nmaster=true\n', "hosts[0].address: 'nope' is not an IP address"),
        ("[[hosts]\n", "not valid TOML"),
        ('[[hosts]]\nname="a"\naddress="198.18.0.2"\nmaster=true\nspare=true\n', "the master is never spare"),
        (
            '[[hosts]]\nname="a"\naddress="198.18.0.2"\nmaster=true\n[[hosts]]\nname="b"\naddress="198.18.0.3"\n'
            'spare="yes"\n',
            "hosts[1].spare: 'yes' must be true or false",
        ),
    ],
)
def test_bad_topologies_name_the_problem(tmp_path, body, message):
    f = tmp_path / "t.toml"
    f.write_text(body)
    with pytest.raises(TopologyError, match=None) as err:
        load(f)
    assert message in str(err.value)


def test_unknown_host_lists_the_known_ones():
    with pytest.raises(TopologyError, match="unknown host 'x' .*salt, pg1"):
        load().host("x")


def test_kitchen_suites_on_hosts_of_their_own_run_in_one_batch():
    from pglab import kitchen

    chosen = kitchen.groups(kitchen.load(kitchen.Path(__file__).resolve().parents[2] / "kitchen.yml"), None)
    names = [[s.name for s in b] for b in kitchen.batches(chosen)]
    assert names == [["member", "pgbouncer", "backup"],
                     ["cluster-pg1", "cluster-pg2", "cluster-pg3", "cluster-backup", "cluster-app1"]]  # fmt: skip
