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

{#- The certificate's content (CN, names, extensions) comes from the model (host_certificate):
    the CA minion signs its own with it, the others' signing policy on the CA minion holds it,
    and the cheap check before the state compares with it (Salt's own comparison, without asking
    the CA minion for the policy on every run). #}
{%- if node.pki.ca %}
{%- set cert_args = dict(node.pki.certificate, signing_private_key=f.ca_key) %}
{%- else %}
{%- set cert_args = {"ca_server": pki.ca_minion, "signing_policy": node.pki.policy,
                     "CN": node.id, "subjectAltName": node.pki.certificate.subjectAltName} %}
{%- endif %}
{%- do cert_args.update({"private_key": f.key, "days_remaining": pki.days_remaining}) %}

pgcluster-pki-host-certificate-present:
  x509.certificate_managed:
    - name: {{ f.cert }}
{%- for arg, value in cert_args | dictsort %}
    - {{ arg }}: {{ value | json }}
{%- endfor %}
    - mode: '0644'
    - unless:
      - fun: pgcluster_pki.certificate_current
        name: {{ f.cert }}
        mode: '0644'
{%- for arg, value in cert_args | dictsort %}
        {{ arg }}: {{ value | json }}
{%- endfor %}
{%- if not node.pki.ca %}
        signing_policy_contents: {{ node.pki.certificate | json }}
{%- endif %}
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
