// Package entra issues the partner app's Microsoft Entra ID tokens: for the
// partner tenant (Partner Center, GDAP discovery) and for every customer
// tenant (Graph), behind azcore.TokenCredential so the Azure and Graph SDKs
// use them as they are.
//
//   - NewCredential (credential.go, grant.go, cache.go): one OAuth2 grant per
//     token posted straight to the tenant's token endpoint with
//     golang.org/x/oauth2 (client secret, certificate assertion, workload
//     identity federated token, or the partner admin's GDAP refresh token),
//     cached per (tenant, scope) in a bounded LRU with one request in flight
//     per key. Why not azidentity's credentials: see NewCredential. A token
//     a resource refuses (Graph's 401 InvalidAuthenticationToken: revoked or
//     expired early) is dropped with the credential's Invalidate method, so
//     the next request gets a new one; a claims challenge (continuous access
//     evaluation) goes to Entra through TokenRequestOptions.Claims.
//   - Source (source.go): the secret, certificate or refresh token can come
//     from a store that changes while the process runs (internal/vault:
//     Key Vault). The credential builds its grant again when the material's
//     version changes, and when Entra refuses the material (AADSTS7000215
//     and the like) it asks the source to reread its store and tries once
//     more with a newer version.
//   - Certificate (certificate.go): the app's certificate with its key, which
//     signs the client assertions and, for Graph's addKey and removeKey, a
//     proof of possession (KeyProof); internal/vault renews it with them.
//   - ForTenant: the per-tenant wrapper that asks for a customer tenant's
//     token and turns Entra's AADSTS errors into classified *cpv.Error
//     values with the operator's advice (Code).
//
// Tokens, secrets, refresh tokens and private keys never reach a log line
// or an error.
// BenchmarkTokenFanOut's figures are in docs/benchmarks.md.
package entra
