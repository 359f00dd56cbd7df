// The Function App on the Flex Consumption plan (Linux, Node 22) with a user-assigned identity,
// outbound VNet integration and its settings (built in main.bicep).

param name string
param planName string
param location string
param tags object

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Subnet delegated to Microsoft.App/environments for VNet integration.')
param subnetId string

@description('Blob container URL holding the deployment package.')
param deploymentContainerUrl string

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Most on-demand instances per function group; Flex Consumption accepts 1 to 1000.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Zone redundancy keeps at least two always-ready instances per function group (billed).')
param zoneRedundant bool = false

@description('App settings: array of { name, value }.')
param appSettings array

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // #checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter; off by default because it bills always-ready instances.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    // #checkov:skip=CKV_AZURE_222: Meta must reach the public webhook; requests are authenticated by X-Hub-Signature-256 and bearer tokens.
    // #checkov:skip=CKV_AZURE_17: Meta's webhook calls carry no client certificate; authentication is the request signature.
    // #checkov:skip=CKV_AZURE_212: Flex Consumption has no fixed worker count; the platform scales per function.
    // #checkov:skip=CKV_AZURE_213: Flex Consumption does not support the App Service health check; /api/health serves external probes.
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: subnetId
    // #checkov:skip=CKV_AZURE_78: Flex Consumption rejects siteConfig.ftpsState (FTPS not supported); FTP publishing is off through the ftp basicPublishingCredentialsPolicies below.
    // Flex Consumption rejects some siteConfig properties (ftpsState, vnetRouteAllEnabled, alwaysOn,
    // linuxFxVersion, ...): see test/unit/infra-drift.test.ts. With VNet integration on Flex all
    // outbound traffic goes through the virtual network.
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }
}

// Deployments authenticate with Entra ID (azd, Core Tools, az CLI); basic auth is not needed.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
