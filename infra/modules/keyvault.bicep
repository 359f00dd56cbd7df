// Key Vault (RBAC, soft delete, purge protection, private endpoint only) holding the app's secrets.
// The app reads them through Key Vault references with its user-assigned identity. Secrets carry
// no expiry: the deployment parameters are their source of truth and rotating one is a
// redeployment, while an expired version may be refused (SecretExpired) and stop the app.

param name string
param location string
param tags object

@description('Principal id of the app identity (gets Key Vault Secrets User).')
param principalId string

@description('Log Analytics workspace for the vault audit log.')
param workspaceId string

@secure()
param whatsappAccessToken string

@secure()
param whatsappAppSecret string

@secure()
param whatsappVerifyToken string

@secure()
@description('Optional: bootstrap token of the management API.')
param manageApiToken string = ''

@secure()
@description('Optional: key of the AI endpoint.')
param aiApiKey string = ''

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
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
    softDeleteRetentionInDays: 30
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Disabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Deny'
    }
  }
}

resource whatsappAccessTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'whatsapp-access-token'
  properties: {
    // #checkov:skip=CKV_AZURE_41: no expiry on purpose: rotation is a redeployment, and an expired version may be refused (SecretExpired), stopping an app nobody redeployed (docs/deployment.md).
    value: whatsappAccessToken
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource whatsappAppSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'whatsapp-app-secret'
  properties: {
    // #checkov:skip=CKV_AZURE_41: no expiry on purpose: rotation is a redeployment, and an expired version may be refused (SecretExpired), stopping an app nobody redeployed (docs/deployment.md).
    value: whatsappAppSecret
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

resource whatsappVerifyTokenSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'whatsapp-verify-token'
  properties: {
    // #checkov:skip=CKV_AZURE_41: no expiry on purpose: rotation is a redeployment, and an expired version may be refused (SecretExpired), stopping an app nobody redeployed (docs/deployment.md).
    value: whatsappVerifyToken
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

// Optional secrets exist only when a value is given.
var optionalSecrets = [
  {
    name: 'manage-api-token'
    value: manageApiToken
  }
  {
    name: 'ai-api-key'
    value: aiApiKey
  }
]

resource optionalSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [
  for secret in optionalSecrets: if (!empty(secret.value)) {
    parent: vault
    name: secret.name
    properties: {
      // #checkov:skip=CKV_AZURE_41: no expiry on purpose: rotation is a redeployment, and an expired version may be refused (SecretExpired), stopping an app nobody redeployed (docs/deployment.md).
      value: secret.value
      contentType: 'text/plain'
      attributes: {
        enabled: true
        }
    }
  }
]

resource secretsUserRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource auditLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
// Versionless secret URIs (the app follows the latest version); empty when the secret is not stored.
output keyVaultUris object = {
  whatsappAccessToken: whatsappAccessTokenSecret.properties.secretUri
  whatsappAppSecret: whatsappAppSecretSecret.properties.secretUri
  whatsappVerifyToken: whatsappVerifyTokenSecret.properties.secretUri
  manageApiToken: empty(manageApiToken) ? '' : '${vault.properties.vaultUri}secrets/manage-api-token'
  aiApiKey: empty(aiApiKey) ? '' : '${vault.properties.vaultUri}secrets/ai-api-key'
}
