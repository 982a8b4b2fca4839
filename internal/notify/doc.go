// Package notify tells the partner when a tenant's refresh changes state:
// newly failed, or recovered. It is level-triggered like the refresh: a
// sweep reads every tenant's status row, compares it with the state the
// last notification was sent for (kept in the store), and sends one digest
// of the differences through shoutrrr to the configured URLs (Microsoft
// Teams, Slack, SMTP, a generic webhook, ...). A recent run whose tenants
// all have a result is reported in the digest once, if some failed.
//
// A tenant failing every night is told once; its recovery once. A sweep
// runs under a lease, so one replica sends at a time, and the state is
// written after the send: a crash in between repeats a digest, never loses
// one. A digest lists at most Config.MaxLines tenants and counts the rest.
//
// Notification URLs carry tokens: they never reach a log line or an error;
// a failed send is reported with the URL's position and scheme only.
package notify
