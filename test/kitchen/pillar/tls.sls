{#- The lab's pgBackRest TLS material (lab_tls.yaml, made by test/lab/make-lab-tls).
    Every minion receives the CA and its own certificate and key, never another host's key. #}
{%- import_yaml "pgcluster/lab_tls.yaml" as tls %}
pgcluster:
  pgbackrest:
    tls:
      ca: {{ tls.ca | json }}
{%- if opts.id in tls.hosts %}
      hosts:
        {{ opts.id }}: {{ tls.hosts[opts.id] | json }}
{%- endif %}
