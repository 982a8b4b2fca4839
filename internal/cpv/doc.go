// Package cpv brings one customer tenant to the state a permission manifest
// asks for: the partner's multi-tenant app consented through Partner Center's
// Control Panel Vendor (CPV) API, the resource service principals present,
// and the app's application roles and delegated grants exactly as listed.
//
// A refresh is level-triggered: it reads the tenant's whole state, computes
// the difference from the manifest with the pure function Plan, and writes
// only that difference. Running it twice, or on two workers at once, ends in
// the same state; running it on a correct tenant writes nothing.
package cpv
