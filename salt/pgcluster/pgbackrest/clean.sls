{#- pgBackRest: backup timers, the TLS server, configuration (the repository passphrase on a
    backup host) and TLS files, spool and log directories, the package. The repository itself
    only with pgcluster:clean:data: true. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set b = pgcluster.pgbackrest %}
{%- set units = [] %}
{%- for name in pgcluster.node.backup %}
{%- for type in ("full", "diff", "incr") %}
{%- do units.append("pgbackrest-" ~ pgcluster.clusters[name].pgbackrest.stanza ~ "-" ~ type) %}
{%- endfor %}
{%- endfor %}

pgbackrest-clean-services-dead:
  service.dead:
    - names:
      - pgbackrest
{%- for unit in units %}
      - {{ unit }}.timer
{%- endfor %}
    - enable: False

pgbackrest-clean-package-removed:
  pkg.removed:
    - name: {{ b.package }}
    - require:
      - service: pgbackrest-clean-services-dead

pgbackrest-clean-files-absent:
  file.absent:
    - names:
      - /etc/systemd/system/pgbackrest.service.d/pgcluster.conf
{%- for unit in units %}
      - /etc/systemd/system/{{ unit }}.timer
      - /etc/systemd/system/{{ unit }}.service
{%- endfor %}
      - {{ salt["file.dirname"](b.config) }}
      - {{ b.spool_path }}
      - {{ b.log_path }}
{%- if pgcluster.clean.data and pgcluster.node.backup %}
      - {{ b.repo_path }}
{%- endif %}
    - require:
      - pkg: pgbackrest-clean-package-removed
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: pgbackrest-clean-files-absent
{%- if pgcluster.node.backup and pgcluster.clean.data %}

pgbackrest-clean-repository-user-absent:
  user.absent:
    - name: {{ b.repo_user }}
    - require:
      - file: pgbackrest-clean-files-absent
{%- endif %}
