{#- This host's TLS material: the CA certificate, its own key (0640, group pgcluster-tls: the
    services' users) and its certificate for its minion id and address. #}
{%- set tplroot = tpldir.split("/")[0] %}
{%- from tplroot ~ "/map.jinja" import pgcluster with context %}
{%- set pki = pgcluster.pki %}
{%- set node = pgcluster.node %}
{%- set f = node.pki.files %}

pgcluster-pki-group-present:
  group.present:
    - name: {{ pki.group }}
    - system: True

pgcluster-pki-dir-present:
  file.directory:
    - name: {{ pki.dir }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True
{%- if pki.mode == "salt" %}
{%- if not node.pki.ca %}

{#- Waits for the CA minion to publish its certificate (a first highstate runs everywhere at once). #}
pgcluster-pki-ca-certificate-present:
  pgcluster.ca_certificate_present:
    - name: {{ f.ca }}
    - ca_minion: {{ pki.ca_minion }}
    - timeout: 300
    - require:
      - file: pgcluster-pki-dir-present
{%- endif %}
{%- if node.pki.host %}

pgcluster-pki-host-key-present:
  x509.private_key_managed:
    - name: {{ f.key }}
    - algo: ec
    - keysize: 256
    - user: root
    - group: {{ pki.group }}
    - mode: '0640'
    {#- Cheap checks first (pgcluster_pki): the x509 states then run only when something differs. #}
    - unless:
      - fun: pgcluster_pki.private_key_current
        name: {{ f.key }}
        curve: secp256r1
        mode: '0640'
        user: root
        group: {{ pki.group }}
    - require:
      - group: pgcluster-pki-group-present
      - file: pgcluster-pki-dir-present

pgcluster-pki-host-certificate-present:
  x509.certificate_managed:
    - name: {{ f.cert }}
{%- if node.pki.ca %}
    {#- The CA minion signs its own certificate with the CA key it holds. #}
    - signing_private_key: {{ f.ca_key }}
    - signing_cert: {{ f.ca }}
    - basicConstraints: 'critical, CA:false'
    - keyUsage: 'critical, digitalSignature, keyEncipherment'
    - extendedKeyUsage: 'serverAuth, clientAuth'
    - subjectKeyIdentifier: hash
    - authorityKeyIdentifier: keyid:always
    - days_valid: {{ pki.days_valid }}
{%- else %}
    - ca_server: {{ pki.ca_minion }}
    - signing_policy: {{ node.pki.policy }}
{%- endif %}
    - private_key: {{ f.key }}
    - CN: {{ node.id }}
    - subjectAltName: 'DNS:{{ node.id }}, IP:{{ node.address }}'
    - days_remaining: {{ pki.days_remaining }}
    - mode: '0644'
    - unless:
      - fun: pgcluster_pki.certificate_current
        name: {{ f.cert }}
        ca: {{ f.ca }}
        private_key: {{ f.key }}
        cn: {{ node.id }}
        dns: [{{ node.id }}]
        ips: [{{ node.address }}]
        days_remaining: {{ pki.days_remaining }}
    - require:
      - x509: pgcluster-pki-host-key-present
{%- if not node.pki.ca %}
      - pgcluster: pgcluster-pki-ca-certificate-present
{%- else %}
      - x509: pgcluster-pki-ca-certificate-present
{%- endif %}
{%- endif %}
{%- else %}

{#- pki mode pillar: the PEM text from pillar, rendered inside templates (never into state data). #}
{%- for which, mode, group in [("ca", "0644", "root"), ("cert", "0644", "root"), ("key", "0640", pki.group)] %}
{%- if which == "ca" or node.pki.host %}

pgcluster-pki-{{ which }}-from-pillar:
  file.managed:
    - name: {{ f[which] }}
    - source: salt://{{ tplroot }}/pki/files/pem.jinja
    - template: jinja
    - context:
        tplroot: {{ tplroot }}
        which: {{ which }}
    - user: root
    - group: {{ group }}
    - mode: '{{ mode }}'
    - show_changes: False
    - require:
      - group: pgcluster-pki-group-present
      - file: pgcluster-pki-dir-present
{%- endif %}
{%- endfor %}
{%- endif %}
