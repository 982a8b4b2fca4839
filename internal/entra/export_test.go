package entra

import (
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// CachedTokens is the number of tokens a NewCredential credential holds
// (for the cache bound tests of the external test package).
func CachedTokens(cred azcore.TokenCredential) int {
	return cred.(*credential).cache.len()
}

// TokenWaiters is the number of callers waiting for the token request in
// flight for (tenant, scope), or 0 when none is in flight.
func TokenWaiters(cred azcore.TokenCredential, tenant, scope string) int {
	c := cred.(*credential).cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.inflight[tokenKey{tenant: strings.ToLower(tenant), scope: scope}]; f != nil {
		return f.waiters
	}
	return 0
}
