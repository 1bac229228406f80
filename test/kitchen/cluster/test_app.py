"""The application host of the cluster converged masterless: writes through PgBouncer work."""


def test_write_through_pgbouncer(host):
    out = host.run("psql service=app -qXAtc 'CREATE TABLE IF NOT EXISTS kitchen(x int); INSERT INTO kitchen VALUES (1) "
                   "RETURNING x' </dev/null")  # fmt: skip
    assert out.rc == 0 and out.stdout.strip() == "1", out.stderr
