{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set p = pgcluster.patroni %}

include:
  - {{ tplroot }}.postgresql.install

{%- if p.install_from == "pip" %}
{%- set spec = "patroni[" ~ p.extras | join(",") ~ "]==" ~ p.version %}
{%- set pip_opts = [] %}
{%- if p.pip.no_index %}{% do pip_opts.append("--no-index") %}{% endif %}
{%- if p.pip.find_links %}{% do pip_opts.append("--find-links=" ~ p.pip.find_links) %}{% endif %}

patroni-virtualenv-created:
  cmd.run:
    - name: /usr/bin/python3 -m venv {{ p.venv }}
    - creates: {{ p.venv }}/bin/python

patroni-installed-in-virtualenv:
  cmd.run:
    - name: {{ p.venv }}/bin/pip install --quiet --disable-pip-version-check {{ pip_opts | join(" ") }} '{{ spec }}'
    - unless: >-
        {{ p.venv }}/bin/python -c "import sys, importlib.metadata as m;
        sys.exit(m.version('patroni') != '{{ p.version }}')"
    - require:
      - cmd: patroni-virtualenv-created
{%- set bin = p.venv ~ "/bin" %}
{%- else %}

patroni-installed-in-virtualenv:
  pkg.installed:
    - name: patroni
{%- set bin = "/usr/bin" %}
{%- endif %}

{#- patronictl for root, with this node's configuration. #}
patronictl-wrapper-installed:
  file.managed:
    - name: /usr/local/bin/patronictl
    - mode: '0755'
    - contents: |
        #!/bin/sh
        # Managed by Salt (pgcluster formula).
        exec {{ bin }}/patronictl -c {{ p.config_dir }}/config.yml "$@"
