// Package notify tells the partner when something changes state: a tenant
// newly failed, missing consent (a failure whose code is in ConsentCodes),
// recovered or onboarded (succeeding for the first time); a recent run
// finished with failures; a condition turned red or green again. It is
// level-triggered like the refresh: a sweep reads every tenant's status
// row and every Source's conditions, compares them with the states the
// last notification was sent for (kept in the store), and sends one
// digest of the differences through shoutrrr to the configured URLs
// (Microsoft Teams, Slack, SMTP, a generic webhook, ...).
//
// A Source is any reader of red/green conditions with a stable key: the
// dispatcher plugs in the credential's expiry and last rotation and the
// webhook registration; the access checks plug in the same way, one
// condition per check. A source read with Every is read at most that
// often; one that fails to read changes nothing.
//
// A tenant failing every night is told once; its recovery once. The
// tenants succeeding at the first sweep are recorded silently, so later
// first successes are news. A sweep runs under a lease, renewed just
// before the send, so one replica sends each digest; the state is written
// after the send: a crash in between repeats a digest, never loses one.
// Without any URL nothing is swept: the changes wait for the first URL. A
// digest lists at most Config.MaxLines tenants and counts the rest.
//
// URLs come from the environment (Config.URLs) and from the settings
// (AddURL, the Settings page): both are used. They carry tokens: they
// never reach a log line, an error or an API answer; a URL is shown as
// its scheme and host (Redact), and a failed send names the URL by its
// origin, position and scheme only.
package notify
