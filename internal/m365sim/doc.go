// Package m365sim is a stateful HTTPS simulator of the three Microsoft
// services cpvrefresh talks to: Entra ID's token endpoint, a subset of
// Microsoft Graph v1.0, and Partner Center's Control Panel Vendor (CPV)
// application consents and webhooks. Tests, benchmarks and the local demo run
// the real SDK clients (azidentity, msgraph-sdk-go, net/http) against it, so
// it answers the way Microsoft's services answer, as their documentation and
// recorded responses show: the same status codes, error envelopes, error
// codes and messages, paging and throttling.
//
// The simulator shares no code with what it tests: it imports no package of
// cpvrefresh, and keeps its own types (TenantState, ServicePrincipal, ...),
// its own GUID check and its own data. What its resource apps publish (app
// roles and scopes with their ids) is its catalog, catalog.json; what a
// correct tenant holds is a permission set (Permissions; by default
// permissions.json, given by Options.Permissions). A manifest with a wrong
// id therefore fails against the simulator instead of being published by it.
//
// # Surfaces
//
// Everything is served on one TLS listener whose certificate is signed by a
// CA generated in memory by New (CACertPEM, WriteCA for SSL_CERT_FILE,
// HTTPClient for an in-process client that trusts it).
//
//   - Entra ID at /{tenant}/...: OpenID metadata
//     (/{tenant}/v2.0/.well-known/openid-configuration), signing keys
//     (/{tenant}/discovery/v2.0/keys) and the token endpoint
//     (POST /{tenant}/oauth2/v2.0/token) for the client_credentials grant
//     (client secret or a client assertion) and the refresh_token grant
//     (refresh tokens rotate; old ones stay valid until revoked). {tenant} is
//     a tenant id, one of its domains, or "organizations"/"common". Tokens are
//     RS256 JWTs bound to a tenant (tid) and an audience (aud); errors carry
//     the real AADSTS codes: 7000215 bad client credentials, 90002 unknown
//     tenant, 50020 terminated GDAP relationship, 65001 consent revoked or
//     (refresh grant) app not consented, 700016 app not in the tenant
//     (client credentials), 70000 unknown or revoked refresh token.
//     Sign-in: /{tenant}/oauth2/v2.0/authorize (partner tenant) shows a page
//     to pick a simulated user (Options.SignInUsers, by default one per
//     cpvrefresh app role and one without) and redirects back with a code
//     bound to the client, the redirect URI, the PKCE challenge (S256 only)
//     and the nonce, echoing the state; the authorization_code grant
//     redeems it once for an ID token (aud = the app, nonce, name,
//     preferred_username, roles) and an access token.
//   - Microsoft Graph at /v1.0: servicePrincipals (by id, by the alternate
//     key servicePrincipals(appId='...'), list with $filter appId eq/in,
//     $select, $top and absolute @odata.nextLink paging, create, delete),
//     appRoleAssignments and appRoleAssignedTo, oauth2PermissionGrants,
//     tenantRelationships/delegatedAdminRelationships (partner tenant; each
//     grants the roles CIPP recommends, GDAPRoles, and has one active access
//     assignment, .../{id}/accessAssignments, giving them to GDAPGroupID;
//     RemoveRelationshipRole and AddRelationshipRole change both),
//     applications(appId='...') (the partner's app registration and its
//     requiredResourceAccess, partner tenant; AddAppPermission and
//     RemoveAppPermission edit it; the partner tenant's app service principal
//     holds admin consent to the permission set),
//     organization, directory roles (directoryRoleTemplates, from Microsoft's
//     published list in directoryroles.json; directoryRoles: list, activate,
//     members, members/$ref add and remove, by id or
//     directoryRoles(roleTemplateId='...'); servicePrincipals/{id}/memberOf
//     and its directoryRole cast; POST roleManagement/directory/roleAssignments,
//     tenant-wide, activating the role; SetRoleUnavailable makes a role
//     404 Request_ResourceNotFound in a tenant, and the implicit user roles
//     answer "Instantiating an implicit user role is not supported."),
//     and $batch (at most 20 requests, dependsOn, 424 for a
//     failed dependency, per-item 429 with Retry-After inside a 200). The
//     directory a request sees is the one of its token's tid. Request bodies
//     may be gzip-compressed. RevokeTokens revokes a tenant's tokens issued
//     so far: Graph answers them 401 InvalidAuthenticationToken, with a
//     claims challenge (error="insufficient_claims") when Options.CAE is set.
//   - Partner Center at /v1/customers/{id}/applicationconsents: POST consents
//     the partner's app (creating its service principal, the resource service
//     principals and AllPrincipals grants), DELETE removes it. A partner-tenant
//     token with Partner Center's audience is required; ms-requestid makes a
//     repeated POST idempotent; 50 requests per second per application id.
//     SendWebhook signs Partner Center events (RSA PKCS#1 v1.5 SHA-256) and
//     POSTs them; the signing certificate is served at WebhookCertURL
//     (/cert/pcnotifications-dispatch.microsoft.com.cer, Partner Center's shape).
//   - The partner's app registration at /v1.0/applications/{id} and
//     /v1.0/applications(appId='...') (partner tenant only): its
//     passwordCredentials, addPassword (the secret text returned once) and
//     removePassword; SetAppPasswordEnd moves a secret's expiry; its certificates (keyCredentials: AddAppCertificate
//     as a portal upload, addKey and removeKey with a proof of possession
//     signed by a certificate the app holds, 403 without one, 401
//     Authentication_MissingOrMalformed for a bad one). The token endpoint
//     accepts a client secret only while the app holds it unexpired
//     (AADSTS7000215 otherwise, 7000222 expired), and a client assertion
//     only when signed with one of its unexpired certificates (700027).
//   - Key Vault's secrets API at /secrets (VaultURL): set, get latest or a
//     version, update tags and attributes, list secrets and versions (paged
//     with nextLink), Key Vault's error shapes (404 SecretNotFound, 403
//     ForbiddenByRbac). Challenge authentication as azsecrets expects: a
//     request without a token gets 401 with WWW-Authenticate: Bearer
//     authorization="{authority}{partner tenant}",
//     resource="https://vault.azure.net". Only the daemons' identity
//     (IdentityClientID, IdentitySecret) gets tokens for the vault, and the
//     vault lets only it in.
//   - Inspection at /_sim/... (no authentication, JSON): fleet, tenants/{id},
//     conforms/{id} (against the simulator's permission set), stats, stats/reset,
//     faults (GET, POST merges), failnext, revoke/{id} (POST: RevokeTokens),
//     onboard, access/... (POST: the access checks' breaks, see
//     serveAccessControl), config (without
//     credentials), ca.pem and the webhook certificate.
//
// # The fleet
//
// New generates Options.Tenants customer tenants deterministically from
// Options.Seed (the same seed and options give the same ids, names and
// directory contents), each with a GDAP relationship in the partner tenant.
// Kinds are allocated in the proportions of Options.Mix (largest remainder,
// so small fleets still contain every kind with a non-zero weight):
//
//   - KindNew: relationship active, the app not consented; only the Microsoft
//     Graph, Windows Azure Active Directory, Exchange Online and SharePoint
//     Online service principals exist, the other resources can be created.
//   - KindCorrect: the simulator's permission set fully applied.
//   - KindDrifted: consented, but some app roles missing, one grant with
//     extra and missing scopes, a duplicate grant on one resource and the
//     grant on another resource missing.
//   - KindUnlicensed: like new or drifted, and the WindowsDefenderATP and
//     Microsoft Threat Protection service principals cannot be created
//     (Graph answers NoBackingApplicationObject, as Microsoft does).
//   - KindRevoked: the app's service principal exists but its consent was
//     revoked: token requests for the tenant fail with AADSTS65001 until the
//     consent is deleted (Partner Center DELETE) and granted again.
//   - KindTerminated: the GDAP relationship is terminated: token requests
//     fail with AADSTS50020 and Partner Center refuses consents with 403.
//
// A tenant's directory is built on first use, so a fleet of 10,000 tenants
// costs little until it is touched; resource service principals share their
// published app roles and scopes with the catalog.
//
// # Knobs and counters
//
// Faults (Options.Faults, SetFaults, POST /_sim/faults) add latency and
// jitter to every call and answer a share of calls with 429 (Graph requests
// and $batch items, Partner Center) or 5xx (Graph, token, Partner Center).
// FailNext makes the next n calls of a surface fail with a given status, for
// deterministic tests. Stats counts round trips per service (Token for the
// token endpoint, Discovery for OpenID metadata and keys, Graph with a $batch
// as one and its items in BatchItems, PartnerCenter), per tenant and per
// endpoint, throttled and failed answers, and successful writes (inside
// $batch too), so tests can assert that a second refresh writes nothing and
// benchmarks can report round trips per tenant.
package m365sim
