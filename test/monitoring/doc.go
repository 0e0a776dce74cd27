// Package monitoring holds the tests of what the operator ships for monitoring it: the
// Prometheus alerts and the Grafana dashboard, checked against the metrics the operator exports.
package monitoring
