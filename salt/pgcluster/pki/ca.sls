{#- The certificate authority, on the CA minion only: its key never leaves this host. The CA
    certificate is published through the Salt mine (mine_functions from pillar) for every host;
    the signing policies (one per host, see pgcluster.ca_pillar) come from this minion's pillar. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set pki = pgcluster.pki %}
{%- set f = pgcluster.node.pki.files %}

pgcluster-pki-ca-dir-present:
  file.directory:
    - name: {{ pki.dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

pgcluster-pki-ca-key-present:
  x509.private_key_managed:
    - name: {{ f.ca_key }}
    - algo: ec
    - keysize: 384
    - mode: '0400'
    {#- Cheap checks first (pgcluster_pki): the x509 states then run only when something differs. #}
    - unless:
      - fun: pgcluster_pki.private_key_current
        name: {{ f.ca_key }}
        curve: secp384r1
        mode: '0400'
    - require:
      - file: pgcluster-pki-ca-dir-present

{%- set ca_args = {"signing_private_key": f.ca_key, "CN": "pgcluster CA",
                   "basicConstraints": "critical, CA:true, pathlen:0", "keyUsage": "critical, cRLSign, keyCertSign",
                   "subjectKeyIdentifier": "hash", "authorityKeyIdentifier": "keyid:always",
                   "days_valid": pki.ca_days_valid, "days_remaining": 0} %}
pgcluster-pki-ca-certificate-present:
  x509.certificate_managed:
    - name: {{ f.ca }}
{%- for arg, value in ca_args | dictsort %}
    - {{ arg }}: {{ value | json }}
{%- endfor %}
    - mode: '0644'
    - unless:
      - fun: pgcluster_pki.certificate_current
        name: {{ f.ca }}
        mode: '0644'
{%- for arg, value in ca_args | dictsort %}
        {{ arg }}: {{ value | json }}
{%- endfor %}
    - require:
      - x509: pgcluster-pki-ca-key-present

pgcluster-pki-ca-certificate-published:
  module.run:
    - mine.update: []
    - onchanges:
      - x509: pgcluster-pki-ca-certificate-present
