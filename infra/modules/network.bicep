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

@description('Give the app subnet a NAT gateway (explicit outbound path and a fixed outbound IP; billed per hour and per GB).')
param natGateway bool = false

@description('NAT gateway and public IP names (used when natGateway is true).')
param natGatewayName string = 'ng-${vnetName}'
param natPublicIpName string = 'pip-${vnetName}'

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

resource natPublicIp 'Microsoft.Network/publicIPAddresses@2024-05-01' = if (natGateway) {
  name: natPublicIpName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    publicIPAllocationMethod: 'Static'
    publicIPAddressVersion: 'IPv4'
  }
}

resource nat 'Microsoft.Network/natGateways@2024-05-01' = if (natGateway) {
  name: natGatewayName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    idleTimeoutInMinutes: 4
    publicIpAddresses: [
      {
        id: natPublicIp.id
      }
    ]
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
          // The app reaches the Graph API and the AI endpoint through this subnet: through the NAT
          // gateway when there is one, otherwise through Azure's default outbound access, kept on
          // explicitly because newer API versions make new subnets private by default.
          defaultOutboundAccess: !natGateway
          natGateway: natGateway ? { id: nat.id } : null
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
output natPublicIp string = natGateway ? natPublicIp.properties.ipAddress : ''
output appSubnetId string = '${vnet.id}/subnets/${appSubnetName}'
