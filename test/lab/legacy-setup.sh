# The lab's legacy host: Debian's stock PostgreSQL 15 `main` cluster with a sample database, set up
# by hand the way a typical standalone server is. Run once inside the host by `lab up`.
#
# To add data by hand:  test/lab/lab exec legacy -- su postgres -c "psql shop"
# or fill it with pgbench: test/lab/lab exec legacy -- su postgres -c "pgbench -i -s 10 shop"
if ! pg_lsclusters -h | grep -q '^15 main '; then
    pg_createcluster 15 main
fi
systemctl enable --quiet postgresql
systemctl start postgresql@15-main
for _ in $(seq 60); do pg_isready -q && break; sleep 0.5; done
pg_isready
su postgres -c "psql -v ON_ERROR_STOP=1 -q" <<'SQL'
CREATE ROLE shop LOGIN PASSWORD 'lab-shop-pw-2b7d';
CREATE DATABASE shop OWNER shop;
\connect shop
SET ROLE shop;
CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL, created timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    amount numeric(12, 2) NOT NULL,
    created timestamptz NOT NULL DEFAULT now()
);
INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 100) i;
INSERT INTO orders (customer_id, amount) SELECT 1 + i % 100, (i % 997) / 10.0 FROM generate_series(1, 1000) i;
SQL
