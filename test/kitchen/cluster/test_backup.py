"""The backup host of the cluster converged masterless: stanza created, a full backup taken."""

import json


def test_a_full_backup_of_the_cluster(host):
    out = host.run("runuser -u pgbackrest -- pgbackrest --stanza=main --output=json info")
    info = json.loads(out.stdout)[0]
    assert info["status"]["code"] == 0
    assert [b["type"] for b in info["backup"]][:1] == ["full"]
