// WhatsApp bot on Azure Functions (Flex Consumption) and Cosmos DB for MongoDB.
// Deploy with `azd up` (infra/main.parameters.json) or `az deployment group create`
// (infra/parameters.example.json). See docs/deployment.md.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Environment name (azd: AZURE_ENV_NAME); feeds the unique resource names and the azd-env-name tag.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Extra tags for every resource.')
param tags object = {}

// --- WhatsApp (Meta) -------------------------------------------------------------------------

@secure()
@minLength(1)
@description('Graph API bearer token (WHATSAPP_ACCESS_TOKEN).')
param whatsappAccessToken string

@secure()
@minLength(1)
@description('Meta app secret; checks X-Hub-Signature-256 (WHATSAPP_APP_SECRET).')
param whatsappAppSecret string

@secure()
@minLength(16)
@description('Token Meta echoes when verifying the webhook; choose a long random value (WHATSAPP_VERIFY_TOKEN).')
param whatsappVerifyToken string

@description('Graph API base URL (WHATSAPP_GRAPH_URL).')
param whatsappGraphUrl string = 'https://graph.facebook.com'

@description('Graph API version (WHATSAPP_API_VERSION).')
param whatsappApiVersion string = 'v25.0'

// --- Management API ----------------------------------------------------------------------------

@secure()
@description('Optional bootstrap bearer token of the management API, at least 16 characters (MANAGE_API_TOKEN).')
param manageApiToken string = ''

// --- AI ------------------------------------------------------------------------------------------

@description('OpenAI-compatible base URL, e.g. https://<resource>.openai.azure.com/openai/v1; empty for built-in replies (AI_ENDPOINT).')
param aiEndpoint string = ''

@description('Model or deployment name; required with aiEndpoint (AI_MODEL).')
param aiModel string = ''

@secure()
@description('Key of the AI endpoint; leave empty to use Microsoft Entra ID with an Azure endpoint (AI_API_KEY).')
param aiApiKey string = ''

@description('Resource id of the Azure OpenAI / AI Services account; with no aiApiKey the app identity gets "Cognitive Services OpenAI User" on it.')
param azureOpenAiResourceId string = ''

@description('System prompt; empty for the built-in one (AI_SYSTEM_PROMPT).')
param aiSystemPrompt string = ''

@minValue(0)
@maxValue(100)
param aiHistoryLimit int = 10

@minValue(100)
@maxValue(600000)
param aiTimeoutMs int = 20000

@minValue(1)
@maxValue(1000)
param aiMaxPerMinute int = 10

// --- Data ------------------------------------------------------------------------------------------

@description('Database name (MONGODB_DATABASE): letters, digits, _ or -; the app refuses any other name at start.')
@minLength(1)
@maxLength(63)
param databaseName string = 'whatsapp_chatbot'

@description('Hours a conversation handed to a person stays with them before the bot answers again (HANDOFF_HOURS).')
@minValue(1)
@maxValue(720)
param handoffHours int = 24

@description('Messages older than this many days are deleted by the retention job; 0 keeps them (RETENTION_DAYS).')
@minValue(0)
@maxValue(36500)
param retentionDays int = 0

@description('Serverless, or Autoscale throughput on each collection. Fixed when the account is created: capacity mode cannot be changed on an existing account.')
@allowed([
  'Serverless'
  'Autoscale'
])
param cosmosCapacityMode string = 'Serverless'

@description('Autoscale maximum RU/s of each collection (Autoscale only).')
@minValue(1000)
@maxValue(10000)
param cosmosAutoscaleMaxThroughput int = 1000

@allowed([
  '4.2'
  '5.0'
  '6.0'
  '7.0'
])
param cosmosServerVersion string = '7.0'

@allowed([
  'Continuous7Days'
  'Continuous30Days'
  'Periodic'
])
param cosmosBackupPolicy string = 'Continuous7Days'

@description('Account key used by the stored connection string (switch to rotate keys).')
@allowed([
  'primary'
  'secondary'
])
param cosmosActiveKey string = 'primary'

// --- Hosting -----------------------------------------------------------------------------------------

@allowed([
  512
  2048
  4096
])
param functionInstanceMemoryMB int = 2048

@description('Most on-demand instances per function group; Flex Consumption accepts 1 to 1000.')
@minValue(1)
@maxValue(1000)
param functionMaximumInstanceCount int = 40

@description('Zone-redundant Function App plan (needs a region with availability zones; bills at least two always-ready instances per function group) and zone-redundant storage.')
param zoneRedundant bool = false

@description('Replication of the storage account. With zoneRedundant its zone-redundant counterpart is used (LRS -> ZRS, GRS -> GZRS, RAGRS -> RAGZRS).')
@allowed([
  'Standard_GRS'
  'Standard_RAGRS'
  'Standard_GZRS'
  'Standard_RAGZRS'
  'Standard_ZRS'
  'Standard_LRS'
])
param storageSku string = 'Standard_GRS'

@description('Address space of the virtual network and its two subnets (Function App integration, private endpoints).')
param vnetAddressPrefix string = '10.0.0.0/16'
param appSubnetPrefix string = '10.0.0.0/24'
param privateEndpointSubnetPrefix string = '10.0.1.0/24'

@description('NAT gateway on the app subnet: an explicit outbound path and a fixed outbound IP (about USD 33 a month plus traffic; docs/deployment.md).')
param natGateway bool = false

@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

// --- Names -------------------------------------------------------------------------------------------

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var allTags = union(tags, {
  'azd-env-name': environmentName
})
var names = {
  identity: 'id-${resourceToken}'
  logAnalytics: 'log-${resourceToken}'
  appInsights: 'appi-${resourceToken}'
  storage: 'st${resourceToken}'
  keyVault: 'kv-${resourceToken}'
  cosmos: 'cosmos-${resourceToken}'
  plan: 'plan-${resourceToken}'
  functionApp: 'func-${resourceToken}'
  vnet: 'vnet-${resourceToken}'
  nsg: 'nsg-${resourceToken}'
}
// "When you create your function app on a plan with availability zone support enabled, only
// zone-redundant storage accounts are supported" (learn.microsoft.com/azure/azure-functions/
// storage-considerations#storage-account-requirements): a zone-redundant plan gets the
// zone-redundant counterpart of storageSku, with the same geo-replication and read access.
var zoneRedundantStorageSkus = {
  Standard_LRS: 'Standard_ZRS'
  Standard_ZRS: 'Standard_ZRS'
  Standard_GRS: 'Standard_GZRS'
  Standard_GZRS: 'Standard_GZRS'
  Standard_RAGRS: 'Standard_RAGZRS'
  Standard_RAGZRS: 'Standard_RAGZRS'
}
var storageSkuName = zoneRedundant ? zoneRedundantStorageSkus[storageSku] : storageSku
var deploymentContainerName = 'app-package-${resourceToken}'
// shared/bot/jobs.ts names the same queues (test/unit/infra-drift.test.ts).
var queueNames = [
  'inbound'
  'inbound-poison'
  'reply-jobs'
  'reply-jobs-poison'
]

// Entra ID for the AI endpoint: no key, and the Azure OpenAI account is known.
var aiUsesEntraId = !empty(aiEndpoint) && empty(aiApiKey) && !empty(azureOpenAiResourceId)
// A placeholder id keeps the module scope valid when the role is not deployed.
var placeholderAiResourceId = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${resourceGroup().name}/providers/Microsoft.CognitiveServices/accounts/none'
var aiResourceParts = split(aiUsesEntraId ? azureOpenAiResourceId : placeholderAiResourceId, '/')

// --- Resources ---------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: allTags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: allTags
    retentionInDays: logRetentionInDays
    principalId: identity.properties.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: names.storage
    location: location
    tags: allTags
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    queueNames: queueNames
    principalId: identity.properties.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: allTags
    principalId: identity.properties.principalId
    workspaceId: monitoring.outputs.workspaceId
    whatsappAccessToken: whatsappAccessToken
    whatsappAppSecret: whatsappAppSecret
    whatsappVerifyToken: whatsappVerifyToken
    manageApiToken: manageApiToken
    aiApiKey: aiApiKey
  }
}

module cosmos 'modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    accountName: names.cosmos
    location: location
    tags: allTags
    databaseName: databaseName
    capacityMode: cosmosCapacityMode
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
    serverVersion: cosmosServerVersion
    backupPolicy: cosmosBackupPolicy
    activeKey: cosmosActiveKey
    keyVaultName: keyVault.outputs.name
  }
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    vnetName: names.vnet
    nsgName: names.nsg
    location: location
    tags: allTags
    addressPrefix: vnetAddressPrefix
    appSubnetPrefix: appSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
    natGateway: natGateway
    privateLinks: [
      {
        name: '${names.storage}-blob'
        resourceId: storage.outputs.id
        groupId: 'blob'
        zone: 'privatelink.blob.${environment().suffixes.storage}'
      }
      {
        name: '${names.storage}-queue'
        resourceId: storage.outputs.id
        groupId: 'queue'
        zone: 'privatelink.queue.${environment().suffixes.storage}'
      }
      {
        name: '${names.storage}-table'
        resourceId: storage.outputs.id
        groupId: 'table'
        zone: 'privatelink.table.${environment().suffixes.storage}'
      }
      {
        name: names.keyVault
        resourceId: keyVault.outputs.id
        groupId: 'vault'
        zone: 'privatelink.vaultcore.azure.net'
      }
      {
        name: names.cosmos
        resourceId: cosmos.outputs.id
        groupId: 'MongoDB'
        zone: 'privatelink.mongo.cosmos.azure.com'
      }
    ]
  }
}

module openAiRole 'modules/openai-role.bicep' = if (aiUsesEntraId) {
  name: 'openai-role'
  scope: resourceGroup(aiResourceParts[2], aiResourceParts[4])
  params: {
    accountName: aiResourceParts[8]
    principalId: identity.properties.principalId
  }
}

// Every setting of shared/config.ts (EnvSchema) except PORT (local dev server only), plus the
// Functions platform settings. test/unit/infra-drift.test.ts compares the names both ways.
var appSettings = [
  {
    // Besides the service URIs below (which the host honours over it): with only
    // `__blobServiceUri` the host can fail to create its BlobServiceClient at startup
    // (Azure/azure-functions-host#11787); `__accountName` avoids it.
    name: 'AzureWebJobsStorage__accountName'
    value: storage.outputs.name
  }
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identity.properties.clientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.outputs.blobEndpoint
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.outputs.queueEndpoint
  }
  {
    // The host keeps its diagnostic events in tables (AZFD0003 when it cannot).
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.outputs.tableEndpoint
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: monitoring.outputs.appInsightsConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  }
  {
    // @azure/identity picks the user-assigned identity (AI with Entra ID).
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'MONGODB_URI'
    value: '@Microsoft.KeyVault(SecretUri=${cosmos.outputs.mongoUriKeyVaultUri})'
  }
  {
    name: 'MONGODB_DATABASE'
    value: databaseName
  }
  {
    name: 'WHATSAPP_VERIFY_TOKEN'
    value: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.keyVaultUris.whatsappVerifyToken})'
  }
  {
    name: 'WHATSAPP_APP_SECRET'
    value: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.keyVaultUris.whatsappAppSecret})'
  }
  {
    name: 'WHATSAPP_ACCESS_TOKEN'
    value: '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.keyVaultUris.whatsappAccessToken})'
  }
  {
    name: 'WHATSAPP_GRAPH_URL'
    value: whatsappGraphUrl
  }
  {
    name: 'WHATSAPP_API_VERSION'
    value: whatsappApiVersion
  }
  {
    name: 'AI_ENDPOINT'
    value: aiEndpoint
  }
  {
    name: 'AI_API_KEY'
    value: empty(aiApiKey) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.keyVaultUris.aiApiKey})'
  }
  {
    name: 'AI_MODEL'
    value: aiModel
  }
  {
    name: 'AI_SYSTEM_PROMPT'
    value: aiSystemPrompt
  }
  {
    name: 'AI_HISTORY_LIMIT'
    value: string(aiHistoryLimit)
  }
  {
    name: 'AI_TIMEOUT_MS'
    value: string(aiTimeoutMs)
  }
  {
    name: 'AI_MAX_PER_MINUTE'
    value: string(aiMaxPerMinute)
  }
  {
    name: 'MANAGE_API_TOKEN'
    value: empty(manageApiToken) ? '' : '@Microsoft.KeyVault(SecretUri=${keyVault.outputs.keyVaultUris.manageApiToken})'
  }
  {
    name: 'RETENTION_DAYS'
    value: retentionDays > 0 ? string(retentionDays) : ''
  }
  {
    name: 'HANDOFF_HOURS'
    value: string(handoffHours)
  }
]

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: allTags
    identityId: identity.id
    subnetId: network.outputs.appSubnetId
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    instanceMemoryMB: functionInstanceMemoryMB
    maximumInstanceCount: functionMaximumInstanceCount
    zoneRedundant: zoneRedundant
    appSettings: appSettings
  }
  // Through their outputs this waits for every other module, so the roles, secrets and private
  // endpoints exist before the host starts and resolves the Key Vault references.
}

// --- Outputs (no secrets) ------------------------------------------------------------------------------

var appUrl = 'https://${functionApp.outputs.defaultHostName}'

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = resourceGroup().name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_URL string = appUrl
output WEBHOOK_URL string = '${appUrl}/api/webhook'
output DASHBOARD_URL string = '${appUrl}/api/manage/'
output HEALTH_URL string = '${appUrl}/api/health'
output KEY_VAULT_NAME string = keyVault.outputs.name
output COSMOS_ACCOUNT_NAME string = cosmos.outputs.name
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output MONGODB_DATABASE string = databaseName
// Empty without the NAT gateway: the address to allow-list where the bot's outbound calls arrive.
output OUTBOUND_IP string = network.outputs.natPublicIp
// azure.yaml's predeploy hook waits until the app identity's storage roles are a few minutes old.
output STORAGE_ROLES_ASSIGNED_AT string = storage.outputs.rolesAssignedOn
