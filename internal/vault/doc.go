// Package vault keeps the partner app's credential in Azure Key Vault
// (azsecrets), signed in as the daemons' own identity (managed or workload
// identity), and rotates it.
//
//   - Store (vault.go) reads the credential at start (client secret,
//     certificate with its key as PEM or a base64 PFX, or refresh token,
//     under CIPP's secret names by default), rereads it on an interval and at
//     once when Entra refuses it (it is the entra.Source of the app's
//     credential), and writes every refresh token Entra rotates as a new
//     version (refresh-token mode).
//   - Rotator (rotate.go) rotates the client secret: Graph addPassword,
//     the secret stored as a new version tagged unproven, a token request
//     with it, the version tagged proven, and after the overlap the secrets
//     it replaced removed with removePassword; never the working one. In
//     certificate mode (cert.go) it renews the certificate the same way
//     when it expires within RenewBefore: a new self-signed certificate
//     registered with addKey (a proof of possession signed by the working
//     one), stored as PEM with its key, proven with a client assertion,
//     and the old ones removed with removeKey.
//
// # Crashes
//
// Each step is durable before the next, and a run starts by reading the
// state the last one left (the app's passwordCredentials, the versions and
// their tags), so a run stopped at any step leaves a working secret and the
// next run completes it: a secret added but never stored is removed (its
// text is lost); a stored, unproven version is proven and marked, or, when
// it never works, marked failed and withdrawn; daemons never use an
// unproven or failed version (Store.Usable takes the newest version before
// it); removals resume where they stopped.
//
// Secret values and private keys never reach a log line, an error or a
// Report: Secret and Version print their version only.
package vault
