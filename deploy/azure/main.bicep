// cpvrefresh on Azure Container Apps.
//
// Creates, in the resource group it is deployed to:
// - a storage account with the work queue, the interactive queue (manual and
//   event refreshes, which workers serve first), their poison queues and the
//   result tables (shared keys disabled: everything authenticates with Entra ID);
// - a Key Vault (RBAC) for the SAM app's credentials;
// - a user-assigned managed identity with the data-plane roles it needs
//   (Storage Queue Data Contributor, Storage Table Data Contributor, Key Vault
//   Secrets Officer, and AcrPull on a registry when one is named);
// - a Log Analytics workspace and a Container Apps environment;
// - the dispatcher (external ingress on 8080 for webhooks, API and UI, at
//   least one replica) and the worker (no ingress, scaled from zero by KEDA on
//   the lengths of the work and interactive queues, authenticated with the
//   managed identity).
//
// First deployment (docs/operations.md, "First deployment"): deploy with
// deployApps=false, put the credentials into the Key Vault, deploy again with
// deployApps=true. The daemons read the SAM app's credential from the Key
// Vault themselves with the managed identity (CPV_KEY_VAULT_URL): they pick
// up a new version without a restart, write back every refresh token Entra
// rotates, and the dispatcher rotates the client secret weekly, which is why
// the identity is Secrets Officer (it writes versions). The API keys are a
// Container Apps Key Vault reference. No secret value passes through this
// template.

targetScope = 'resourceGroup'

@description('Azure region of every resource.')
param location string = resourceGroup().location

@description('Prefix of the resource names: 3-11 lower-case letters and digits, starting with a letter.')
@minLength(3)
@maxLength(11)
param name string = 'cpvrefresh'

@description('Container image with both daemons (deploy/Dockerfile), e.g. myregistry.azurecr.io/cpvrefresh:1.0.0.')
param image string

@description('Name of an Azure Container Registry in this resource group to pull the image from with the managed identity (AcrPull is granted); empty for a public image.')
param registryName string = ''

@description('The partner\'s own Entra tenant id.')
param partnerTenantId string = tenant().tenantId

@description('Application (client) id of the partner\'s multi-tenant SAM app.')
param clientId string

@description('How the SAM app authenticates: secret (Key Vault secret cpv-client-secret, rotated weekly), certificate (Key Vault certificate cpv-certificate) or refresh-token (secrets cpv-refresh-token and cpv-client-secret).')
@allowed([
  'secret'
  'certificate'
  'refresh-token'
])
param authMode string = 'secret'

@description('Entra ID issuer whose tokens the dispatcher API accepts; empty to use API keys (Key Vault secret cpv-api-keys).')
param authIssuer string = ''

@description('Audience the API\'s bearer tokens must carry (with authIssuer).')
param authAudience string = ''

@description('Work queue name; the poison queue is <queueName>-poison, the interactive queue <queueName>-interactive (poison: <queueName>-interactive-poison).')
@maxLength(44)
param queueName string = 'cpv-refresh'

@description('Prefix of the result tables.')
param tablePrefix string = 'cpv'

@description('Refreshes one worker replica runs at once (CPV_CONCURRENCY); also the queue length per replica for scaling.')
@minValue(1)
@maxValue(1024)
param workerConcurrency int = 16

@description('Most worker replicas. workerMaxReplicas x workerConcurrency refreshes run at once: keep it at 50 or below (Partner Center allows 50 requests/s per app); see docs/operations.md, "Scaling".')
@minValue(1)
@maxValue(300)
param workerMaxReplicas int = 3

@description('Cron schedule of the nightly refresh.')
param schedule string = '0 0 * * *'

@description('IANA time zone of the schedule.')
param timeZone string = 'UTC'

@description('Cron schedule (in timeZone) of the weekly client secret rotation (authMode secret).')
param rotationSchedule string = '0 0 * * 0'

@description('Entra ID authority host.')
param authorityHost string = environment().authentication.loginEndpoint

@description('Microsoft Graph base URL.')
param graphUrl string = 'https://graph.microsoft.com/v1.0'

@description('Partner Center API base URL.')
param partnerCenterUrl string = 'https://api.partnercenter.microsoft.com'

@description('Deploy the two container apps. The first deployment sets this to false, so the Key Vault exists (and the secrets can be put in it) before the apps reference them.')
param deployApps bool = true

@description('Object id of a user or group allowed to write the Key Vault\'s secrets (Key Vault Secrets Officer); empty for none.')
param secretsOfficerPrincipalId string = ''

@description('Tags for every resource.')
param tags object = {}

var suffix = uniqueString(resourceGroup().id, name)

// Built-in role definitions (the same ids in every tenant).
var roles = {
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}

// The tables internal/store creates and uses (prefix + base name).
var tableBaseNames = [
  'tenants'
  'status'
  'history'
  'runs'
  'control'
  'activity'
]

// The worker's listener (CPV_WORKER_LISTEN default) and the dispatcher's
// (CPV_DISPATCHER_LISTEN default).
var workerPort = 9091
var dispatcherPort = 8080

// On SIGTERM the worker finishes in-flight refreshes for CPV_SHUTDOWN_GRACE,
// then releases the rest; Container Apps kills it after the termination
// grace period, which must be longer.
var shutdownGrace = '25s'
var terminationGracePeriodSeconds = 30

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take('${name}${suffix}', 24)
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource workQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: queueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${queueName}-poison'
}

// Refreshes of one tenant (manual, event, onboarding): workers serve this
// queue before the runs in the work queue (CPV_INTERACTIVE_QUEUE).
var interactiveQueueName = '${queueName}-interactive'

resource interactiveQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: interactiveQueueName
}

resource interactivePoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${interactiveQueueName}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for base in tableBaseNames: {
    parent: tableService
    name: '${tablePrefix}${base}'
  }
]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${name}-kv-${suffix}', 24)
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-identity'
  location: location
  tags: tags
}

resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The daemons write versions (rotated secrets and refresh tokens), so the
// identity is Secrets Officer rather than Secrets User.
resource secretsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(secretsOfficerPrincipalId)) {
  name: guid(vault.id, secretsOfficerPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: secretsOfficerPrincipalId
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = if (!empty(registryName)) {
  name: registryName
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(registryName)) {
  name: guid(resourceGroup().id, registryName, identity.id, roles.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource appEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: '${name}-env'
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

// Key Vault secret names the operator fills in (docs/operations.md).
var vaultSecrets = {
  clientSecret: 'cpv-client-secret'
  certificate: 'cpv-certificate'
  refreshToken: 'cpv-refresh-token'
  apiKeys: 'cpv-api-keys'
}

// The daemons read the credential from the Key Vault themselves: no
// Container Apps secret and no volume carries it.
var credentialSecretsByMode = {
  secret: []
  certificate: []
  'refresh-token': []
}

// The Key Vault secret names of each mode (vaultSecrets; the daemons'
// defaults are CIPP's names). A certificate created in the Key Vault keeps
// its certificate and key in the secret of the same name (PFX, or PEM with
// content type application/x-pem-file).
var credentialEnvByMode = {
  secret: [
    {
      name: 'CPV_SECRET_NAME_APPLICATION_SECRET'
      value: 'cpv-client-secret'
    }
  ]
  certificate: [
    {
      name: 'CPV_SECRET_NAME_CERTIFICATE'
      value: 'cpv-certificate'
    }
  ]
  'refresh-token': [
    {
      name: 'CPV_SECRET_NAME_APPLICATION_SECRET'
      value: 'cpv-client-secret'
    }
    {
      name: 'CPV_SECRET_NAME_REFRESH_TOKEN'
      value: 'cpv-refresh-token'
    }
  ]
}

// Settings both daemons read (docs/configuration.md).
var commonEnv = [
  {
    name: 'CPV_TRANSPORT'
    value: 'storagequeue'
  }
  {
    name: 'CPV_QUEUE'
    value: queueName
  }
  {
    name: 'CPV_INTERACTIVE_QUEUE'
    value: interactiveQueueName
  }
  {
    name: 'CPV_QUEUE_SERVICE_URL'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'CPV_TABLE_SERVICE_URL'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'CPV_TABLE_PREFIX'
    value: tablePrefix
  }
  {
    name: 'CPV_AUTH_MODE'
    value: authMode
  }
  {
    name: 'CPV_PARTNER_TENANT_ID'
    value: partnerTenantId
  }
  {
    name: 'CPV_CLIENT_ID'
    value: clientId
  }
  {
    name: 'CPV_AUTHORITY_HOST'
    value: authorityHost
  }
  {
    name: 'CPV_GRAPH_URL'
    value: graphUrl
  }
  {
    name: 'CPV_PARTNER_CENTER_URL'
    value: partnerCenterUrl
  }
  {
    name: 'CPV_LOG_FORMAT'
    value: 'json'
  }
  {
    name: 'CPV_KEY_VAULT_URL'
    value: vault.properties.vaultUri
  }
  // Selects the user-assigned identity for Azure Storage and Key Vault
  // (azidentity's DefaultAzureCredential).
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
]

var workerEnv = [
  {
    name: 'CPV_CONCURRENCY'
    value: string(workerConcurrency)
  }
  {
    name: 'CPV_SHUTDOWN_GRACE'
    value: shutdownGrace
  }
  {
    // Partner Center allows 50 consent requests/s per app across all
    // replicas: each replica paces itself to its share of 45.
    name: 'CPV_PARTNER_CENTER_RATE'
    value: string(45 / workerMaxReplicas)
  }
]

var dispatcherEnv = [
  {
    name: 'CPV_SCHEDULE'
    value: schedule
  }
  {
    name: 'CPV_TIME_ZONE'
    value: timeZone
  }
  {
    name: 'CPV_ROTATION_SCHEDULE'
    value: rotationSchedule
  }
]

// The dispatcher API accepts Entra ID bearer tokens or API keys.
var apiAuthEnvByKind = {
  entra: [
    {
      name: 'CPV_AUTH_ISSUER'
      value: authIssuer
    }
    {
      name: 'CPV_AUTH_AUDIENCE'
      value: authAudience
    }
  ]
  keys: [
    {
      name: 'CPV_API_KEYS'
      secretRef: 'api-keys'
    }
  ]
}

var apiAuthSecretsByKind = {
  entra: []
  keys: [
    {
      name: 'api-keys'
      keyVaultUrl: '${vault.properties.vaultUri}secrets/${vaultSecrets.apiKeys}'
      identity: identity.id
    }
  ]
}

var apiAuthKind = empty(authIssuer) ? 'keys' : 'entra'

var registries = empty(registryName)
  ? []
  : [
      {
        server: '${registryName}${environment().suffixes.acrLoginServer}'
        identity: identity.id
      }
    ]

// The container image's default storage connection string is the local
// Azurite; the empty flag clears it so the daemons use the service URLs with
// the managed identity.
var daemonArgs = [
  '-storage-connection-string='
]

resource dispatcher 'Microsoft.App/containerApps@2025-01-01' = if (deployApps) {
  name: '${name}-dispatcher'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  dependsOn: [
    queueContributor
    tableContributor
    secretsWriter
    acrPull
    workQueue
    poisonQueue
    interactiveQueue
    interactivePoisonQueue
    tables
  ]
  properties: {
    environmentId: appEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: dispatcherPort
        transport: 'http'
        allowInsecure: false
      }
      secrets: concat(credentialSecretsByMode[authMode], apiAuthSecretsByKind[apiAuthKind])
      registries: registries
    }
    template: {
      terminationGracePeriodSeconds: terminationGracePeriodSeconds
      containers: [
        {
          name: 'dispatcher'
          image: image
          command: [
            '/usr/local/bin/dispatcher'
          ]
          args: daemonArgs
          env: concat(commonEnv, credentialEnvByMode[authMode], dispatcherEnv, apiAuthEnvByKind[apiAuthKind])
          resources: {
            cpu: json('0.25')
            memory: '0.5Gi'
          }
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: dispatcherPort
              }
              periodSeconds: 10
              timeoutSeconds: 2
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: dispatcherPort
              }
              periodSeconds: 5
              timeoutSeconds: 3
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: 2
      }
    }
  }
}

resource worker 'Microsoft.App/containerApps@2025-01-01' = if (deployApps) {
  name: '${name}-worker'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  dependsOn: [
    queueContributor
    tableContributor
    secretsWriter
    acrPull
    workQueue
    poisonQueue
    interactiveQueue
    interactivePoisonQueue
    tables
  ]
  properties: {
    environmentId: appEnvironment.id
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      secrets: credentialSecretsByMode[authMode]
      registries: registries
    }
    template: {
      terminationGracePeriodSeconds: terminationGracePeriodSeconds
      containers: [
        {
          name: 'worker'
          image: image
          command: [
            '/usr/local/bin/worker'
          ]
          args: daemonArgs
          env: concat(commonEnv, credentialEnvByMode[authMode], workerEnv)
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          probes: [
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: workerPort
              }
              periodSeconds: 10
              timeoutSeconds: 2
              failureThreshold: 3
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: workerPort
              }
              periodSeconds: 10
              timeoutSeconds: 3
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: 0
        maxReplicas: workerMaxReplicas
        pollingInterval: 15
        cooldownPeriod: 300
        rules: [
          {
            name: 'work-queue'
            azureQueue: {
              accountName: storage.name
              queueName: queueName
              queueLength: workerConcurrency
              identity: identity.id
            }
          }
          {
            // A manual refresh wakes a worker scaled to zero.
            name: 'interactive-queue'
            azureQueue: {
              accountName: storage.name
              queueName: interactiveQueueName
              queueLength: workerConcurrency
              identity: identity.id
            }
          }
        ]
      }
    }
  }
}

@description('Public URL of the dispatcher (API, UI and the Partner Center webhook at /webhooks/partnercenter).')
output dispatcherUrl string = deployApps ? 'https://${dispatcher.properties.configuration.ingress.fqdn}' : ''

@description('Key Vault to put the credentials in.')
output keyVaultName string = vault.name

@description('Storage account with the queues and tables.')
output storageAccountName string = storage.name

@description('Client id of the managed identity the apps run as.')
output identityClientId string = identity.properties.clientId
