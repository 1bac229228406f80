{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set fw = pgcluster.firewall %}

include:
  - {{ tplroot }}.firewall.install

pgcluster-firewall-rules-managed:
  file.managed:
    - name: {{ fw.rules }}
    - source: salt://{{ tplroot }}/firewall/files/firewall.nft.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
    - makedirs: True
    - mode: '0644'
    - check_cmd: /usr/sbin/nft -c -f
    - require:
      - pkg: pgcluster-firewall-package-installed
