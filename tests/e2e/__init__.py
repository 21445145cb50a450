"""End-to-end tests against real Postfix, Dovecot, Prometheus and Alertmanager."""
