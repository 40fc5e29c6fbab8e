"""The monitoring stack: promtool and amtool on the rules and configs, a real Prometheus and Alertmanager (marker
`stack`), the Grafana dashboards and their queries, the systemd unit. A package; tests/conftest.py applies."""
