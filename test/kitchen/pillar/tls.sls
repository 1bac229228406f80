{#- The kitchen suites' TLS material (tls.yaml, made by test/kitchen/make-tls), pgcluster:pki mode
    pillar: every minion receives the CA and its own certificate and key, never another's key. #}
{%- import_yaml "pgcluster/tls.yaml" as tls %}
pgcluster:
  pki:
    mode: pillar
    ca: {{ tls.ca | json }}
{%- if opts.id in tls.hosts %}
    hosts:
      {{ opts.id }}: {{ tls.hosts[opts.id] | json }}
{%- endif %}
