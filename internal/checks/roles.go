package checks

import "strings"

// Role is an Entra role by its template id (the id GDAP relationships and
// access assignments name).
type Role struct {
	ID   string
	Name string
}

// cippRoles are the roles CIPP recommends for its service account's GDAP
// relationships (its default GDAP role set), by template id.
var cippRoles = []Role{
	{"9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3", "Application Administrator"},
	{"0526716b-113d-4c15-b2c8-68e3c22b9f80", "Authentication Policy Administrator"},
	{"b0f54661-2d74-4c50-afa3-1ec803f12efe", "Billing Administrator"},
	{"892c5842-a9a6-463a-8041-72aa08ca3cf6", "Cloud App Security Administrator"},
	{"7698a772-787b-4ac8-901f-60d6b08affd2", "Cloud Device Administrator"},
	{"8329153b-31d0-4727-b945-745eb3bc5f31", "Domain Name Administrator"},
	{"29232cdf-9323-42fd-ade2-1d097af3e4de", "Exchange Administrator"},
	{"f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader"},
	{"3a2c62db-5318-420d-8d74-23affee5d9d5", "Intune Administrator"},
	{"7be44c8a-adaf-4e2a-84d6-ab2649e08a13", "Privileged Authentication Administrator"},
	{"e8611ab8-c189-46e8-94e1-60213ab1f814", "Privileged Role Administrator"},
	{"194ae4cb-b126-40b2-bd5b-6091b380977d", "Security Administrator"},
	{"f28a1f50-f6e7-4571-818b-6a12f2af6b6c", "SharePoint Administrator"},
	{"69091246-20e8-4a56-aa4d-066075b2a7a8", "Teams Administrator"},
	{"fe930be7-5e62-47db-91af-98c3a49a38b1", "User Administrator"},
}

// otherRoles name a few more roles relationships commonly grant.
var otherRoles = []Role{
	{"62e90394-69f5-4237-9190-012177145e10", "Global Administrator"},
	{"158c047a-c907-4556-b7ef-446551a6b5f7", "Cloud Application Administrator"},
}

// CIPPRoles returns the roles CIPP recommends, the default of Config.Roles.
func CIPPRoles() []Role { return append([]Role(nil), cippRoles...) }

// CIPPRoleIDs returns their template ids.
func CIPPRoleIDs() []string {
	out := make([]string, len(cippRoles))
	for i, r := range cippRoles {
		out[i] = r.ID
	}
	return out
}

// roleName names a role template id ("" ids as they are).
func roleName(id string) string {
	id = strings.ToLower(id)
	for _, list := range [][]Role{cippRoles, otherRoles} {
		for _, r := range list {
			if r.ID == id {
				return r.Name
			}
		}
	}
	return id
}
