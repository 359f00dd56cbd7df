// Virtual network for the Function App (outbound VNet integration) and private endpoints for the
// data services, which have public network access disabled.

@description('Virtual network name.')
param vnetName string

@description('Network security group name (one NSG guards both subnets).')
param nsgName string

param location string
param tags object

@description('Address space of the virtual network.')
param addressPrefix string = '10.0.0.0/16'

@description('Subnet of the Function App VNet integration (inside addressPrefix).')
param appSubnetPrefix string = '10.0.0.0/24'

@description('Subnet of the private endpoints (inside addressPrefix).')
param privateEndpointSubnetPrefix string = '10.0.1.0/24'

@description('Private endpoints to create: name, target resource id, sub-resource (group id) and private DNS zone.')
param privateLinks array

var appSubnetName = 'snet-app'
var privateEndpointSubnetName = 'snet-private-endpoints'

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: nsgName
  location: location
  tags: tags
  properties: {
    // The default rules (deny inbound from the internet, allow within the VNet) are what we want.
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: appSubnetName
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          // Flex Consumption VNet integration requires this delegation.
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

resource dnsZones 'Microsoft.Network/privateDnsZones@2024-06-01' = [
  for link in privateLinks: {
    name: link.zone
    location: 'global'
    tags: tags
  }
]

resource dnsZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [
  for (link, i) in privateLinks: {
    parent: dnsZones[i]
    name: '${vnetName}-link'
    location: 'global'
    tags: tags
    properties: {
      registrationEnabled: false
      virtualNetwork: {
        id: vnet.id
      }
    }
  }
]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [
  for link in privateLinks: {
    name: 'pe-${link.name}'
    location: location
    tags: tags
    properties: {
      subnet: {
        id: '${vnet.id}/subnets/${privateEndpointSubnetName}'
      }
      privateLinkServiceConnections: [
        {
          name: 'pe-${link.name}'
          properties: {
            privateLinkServiceId: link.resourceId
            groupIds: [
              link.groupId
            ]
          }
        }
      ]
    }
  }
]

resource privateDnsZoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [
  for (link, i) in privateLinks: {
    parent: privateEndpoints[i]
    name: 'default'
    properties: {
      privateDnsZoneConfigs: [
        {
          name: replace(link.zone, '.', '-')
          properties: {
            privateDnsZoneId: dnsZones[i].id
          }
        }
      ]
    }
    dependsOn: [
      dnsZoneLinks[i]
    ]
  }
]

output vnetId string = vnet.id
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
