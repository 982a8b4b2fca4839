package cpv

import "context"

// GraphAppID is the application id of Microsoft Graph, the resource that
// Partner Center's consent grants the partner's app its first scopes on.
const GraphAppID = "00000003-0000-0000-c000-000000000000"

// Permission is an application role or a delegated scope as a resource
// service principal publishes it: a stable id and its value (e.g. "User.Read.All").
type Permission struct {
	ID    string `json:"id"`
	Value string `json:"value"`
}

// ServicePrincipal is the part of a Graph servicePrincipal the refresh needs.
type ServicePrincipal struct {
	ID          string       `json:"id"`
	AppID       string       `json:"appId"`
	DisplayName string       `json:"displayName,omitempty"`
	AppRoles    []Permission `json:"appRoles,omitempty"`
	Scopes      []Permission `json:"oauth2PermissionScopes,omitempty"`
}

// AppRoleAssignment is an application permission held by the app's service principal.
type AppRoleAssignment struct {
	ID          string `json:"id"`
	PrincipalID string `json:"principalId"`
	ResourceID  string `json:"resourceId"`
	AppRoleID   string `json:"appRoleId"`
}

// Grant is an oauth2PermissionGrant (delegated permissions) of the app's
// service principal on one resource. Scope is space-separated, as Graph keeps it.
type Grant struct {
	ID          string `json:"id"`
	ClientID    string `json:"clientId"`
	ConsentType string `json:"consentType"`
	PrincipalID string `json:"principalId,omitempty"`
	ResourceID  string `json:"resourceId"`
	Scope       string `json:"scope"`
}

// State is everything a plan needs to know about one tenant: the app's
// service principal (nil when the app is not consented there), the resource
// service principals present among those the manifest names, the app's
// role assignments and delegated grants, and the directory roles its
// service principal is a member of.
type State struct {
	App            *ServicePrincipal   `json:"app,omitempty"`
	Resources      []ServicePrincipal  `json:"resources,omitempty"`
	Assignments    []AppRoleAssignment `json:"assignments,omitempty"`
	Grants         []Grant             `json:"grants,omitempty"`
	DirectoryRoles []RoleMembership    `json:"directoryRoles,omitempty"`
}

// ChangeKind names one kind of write to a tenant's directory.
type ChangeKind string

const (
	// CreateServicePrincipal adds a resource app's service principal (POST /servicePrincipals).
	CreateServicePrincipal ChangeKind = "createServicePrincipal"
	// DeleteServicePrincipal removes a service principal (reset only).
	DeleteServicePrincipal ChangeKind = "deleteServicePrincipal"
	// AddAppRole assigns an application permission to the app's service principal.
	AddAppRole ChangeKind = "addAppRole"
	// RemoveAppRole removes an assignment the manifest no longer lists ("exact" mode only).
	RemoveAppRole ChangeKind = "removeAppRole"
	// CreateGrant creates the AllPrincipals delegated grant on a resource.
	CreateGrant ChangeKind = "createGrant"
	// UpdateGrant replaces the scope string of an existing grant.
	UpdateGrant ChangeKind = "updateGrant"
	// DeleteGrant removes a duplicate grant on the same resource.
	DeleteGrant ChangeKind = "deleteGrant"
	// AddDirectoryRole makes the app's service principal a member of a
	// directory role (a tenant-wide role assignment).
	AddDirectoryRole ChangeKind = "addDirectoryRole"
	// RemoveDirectoryRole removes the app's service principal from a
	// directory role the manifest does not list ("exact" mode only).
	RemoveDirectoryRole ChangeKind = "removeDirectoryRole"
)

// Change is one write. Which fields are set depends on Kind:
//   - CreateServicePrincipal: ResourceAppID.
//   - DeleteServicePrincipal: ObjectID (the service principal's id).
//   - AddAppRole: ResourceAppID, ResourceID, AppRoleID, Value.
//   - RemoveAppRole: ResourceAppID, ResourceID, AppRoleID, ObjectID (the assignment's id).
//   - CreateGrant: ResourceAppID, ResourceID, Scope.
//   - UpdateGrant: ResourceAppID, ResourceID, ObjectID (the grant's id), Scope.
//   - DeleteGrant: ResourceAppID, ResourceID, ObjectID (the grant's id).
//   - AddDirectoryRole: RoleTemplateID, Value (the role's display name).
//   - RemoveDirectoryRole: RoleTemplateID, Value, ObjectID (the tenant's
//     directoryRole object).
//
// Scope is the complete space-separated scope string the grant must end with.
type Change struct {
	Kind          ChangeKind `json:"kind"`
	ResourceAppID string     `json:"resourceAppId,omitempty"`
	ResourceID    string     `json:"resourceId,omitempty"`
	AppRoleID     string     `json:"appRoleId,omitempty"`
	Value         string     `json:"value,omitempty"`
	ObjectID      string     `json:"objectId,omitempty"`
	Scope         string     `json:"scope,omitempty"`
	// RoleTemplateID is a directory role's template id.
	RoleTemplateID string `json:"roleTemplateId,omitempty"`
}

// Verdict says what became of one Change: the Directory reports one of the
// first four for each change it was given, and a Result's Detail carries the
// same, or Planned for a change that was not written.
type Verdict string

const (
	// Applied: the write succeeded.
	Applied Verdict = "applied"
	// AlreadyPresent: the directory answered that the object already exists
	// (a concurrent refresh or replication lag); the desired state holds.
	AlreadyPresent Verdict = "alreadyPresent"
	// Unavailable: the resource cannot exist in this tenant (no licence for the
	// service), or the directory role cannot be assigned there; reported as
	// a notice, not a failure.
	Unavailable Verdict = "unavailable"
	// Failed: the write failed; Err says why.
	Failed Verdict = "failed"
	// Planned: not written (a dry run, or the refresh stopped first).
	Planned Verdict = "planned"
)

// Outcome is the result of one Change. For an applied CreateServicePrincipal,
// ServicePrincipal holds the new object (its id and published roles and scopes).
type Outcome struct {
	Change           Change
	Status           Verdict
	ServicePrincipal *ServicePrincipal
	Err              error
}

// Directory reads and writes one tenant's directory (Microsoft Graph).
// It is declared here, where it is used; internal/graph implements it with
// msgraph-sdk-go so that only that package pays the SDK's compile cost.
type Directory interface {
	// Read returns the app's state in tenant in as few round trips as the
	// implementation can (one $batch against Graph), the app's directory
	// roles included. resourceAppIDs are the resource apps whose service
	// principals the plan needs.
	Read(ctx context.Context, tenant, appID string, resourceAppIDs []string) (State, error)
	// Apply performs changes, batching them, and reports one Outcome per change
	// in the same order. appSPID is the id of the app's service principal in
	// tenant. The error is non-nil only when the call as a whole failed (token,
	// transport, throttling that outlived its retries); per-change failures are
	// in the outcomes.
	Apply(ctx context.Context, tenant, appSPID string, changes []Change) ([]Outcome, error)
}

// Consenter grants and revokes the app's consent in a customer tenant
// through Partner Center's Control Panel Vendor API.
type Consenter interface {
	// Consent adds the app to tenant with the given grants. A consent that is
	// already present is success.
	Consent(ctx context.Context, tenant, appID string, grants []ConsentGrant) error
	// RemoveConsent deletes the app's consent from tenant. A consent that is
	// already absent is success.
	RemoveConsent(ctx context.Context, tenant, appID string) error
}

// ConsentGrant is one entry of applicationGrants in a Partner Center consent:
// a resource app and its comma-separated scopes.
type ConsentGrant struct {
	EnterpriseApplicationID string `json:"enterpriseApplicationId"`
	Scope                   string `json:"scope"`
}
