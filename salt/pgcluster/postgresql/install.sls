{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set pg = pgcluster.postgresql %}
{#- With package_version set, the packages that carry the minor version are pinned to it: a
    change installs the new minor (running PostgreSQL keeps the old binaries until
    `salt-run pgcluster.rolling_restart` restarts it). #}
{%- set pinned = pg.minor_packages if pg.package_version else [] %}
{%- set pkgs = [] %}
{%- for name in pg.packages if name not in pinned %}{% do pkgs.append(name) %}{% endfor %}
{%- for name in pinned %}{% do pkgs.append({name: pg.package_version}) %}{% endfor %}

postgresql-packages-installed:
  pkg.installed:
    - pkgs: {{ pkgs | json }}
