// Cosmos DB for MongoDB (RU): the account, the database, the collections with their indexes, and the
// connection string written into Key Vault (never an output).
//
// infra/ owns the collections and indexes: Cosmos DB adds unique indexes only to empty collections,
// and with key-based metadata writes disabled the app cannot create them; it only verifies them.
// `mongoCollections` must match shared/data/indexes.ts exactly (test/unit/infra-drift.test.ts).

param accountName string
param location string
param tags object

@description('Database name (MONGODB_DATABASE): letters, digits, _ or -; the app refuses any other name at start.')
@minLength(1)
@maxLength(63)
param databaseName string

@description('Serverless (pay per request) or Autoscale (provisioned autoscale throughput on each collection).')
@allowed([
  'Serverless'
  'Autoscale'
])
param capacityMode string = 'Serverless'

@description('Autoscale maximum RU/s of each collection when capacityMode is Autoscale (unsharded collections: at most 10000).')
@minValue(1000)
@maxValue(10000)
param autoscaleMaxThroughput int = 1000

@allowed([
  '4.2'
  '5.0'
  '6.0'
  '7.0'
])
param serverVersion string = '7.0'

@description('Continuous backup (point-in-time restore) tier, or Periodic.')
@allowed([
  'Continuous7Days'
  'Continuous30Days'
  'Periodic'
])
param backupPolicy string = 'Continuous7Days'

@description('Which account key the stored connection string uses; switch to rotate keys without downtime.')
@allowed([
  'primary'
  'secondary'
])
param activeKey string = 'primary'

@description('Key Vault that receives the connection string.')
param keyVaultName string

var serverless = capacityMode == 'Serverless'
// EnableUniqueCompoundNestedDocs: the users index {handoff.since, _id} is a compound index over a
// nested path, which Cosmos DB refuses by default ("Compound indexes on nested fields aren't
// supported by default", learn.microsoft.com/azure/cosmos-db/mongodb/indexing). Capabilities are
// set when the account is created: ARM cannot change them later, and this one cannot be removed
// (learn.microsoft.com/azure/cosmos-db/mongodb/how-to-configure-capabilities; docs/deployment.md).
var provisionedCapabilities = [
  {
    name: 'EnableMongo'
  }
  {
    name: 'EnableUniqueCompoundNestedDocs'
  }
]
var serverlessCapabilities = [
  {
    name: 'EnableMongo'
  }
  {
    name: 'EnableServerless'
  }
  {
    name: 'EnableUniqueCompoundNestedDocs'
  }
]
// Throughput is provisioned per collection, never on the database: a database with shared
// throughput requires a shard key on every collection, and these collections are unsharded
// (docs/deployment.md, "Capacity mode"). test/unit/infra-drift.test.ts holds this.
var autoscaleOptions = {
  autoscaleSettings: {
    maxThroughput: autoscaleMaxThroughput
  }
}
var periodicBackup = {
  type: 'Periodic'
  periodicModeProperties: {
    backupIntervalInMinutes: 240
    backupRetentionIntervalInHours: 168
    backupStorageRedundancy: 'Geo'
  }
}
var continuousBackup = {
  type: 'Continuous'
  continuousModeProperties: {
    tier: backupPolicy
  }
}

// Ascending keys only; every collection also carries the mandatory `_id` index.
var mongoCollections = [
  {
    name: 'users'
    indexes: [
      {
        key: {
          keys: [
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'lastMessageAt'
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'searchKeys'
          ]
        }
      }
      {
        key: {
          keys: [
            'waId'
          ]
        }
      }
      {
        key: {
          keys: [
            'bsuid'
          ]
        }
      }
      {
        key: {
          keys: [
            'handoff.since'
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'optedOut'
          ]
        }
      }
      {
        key: {
          keys: [
            'uncounted'
          ]
        }
      }
      {
        key: {
          keys: [
            'welcomeClaim'
          ]
        }
      }
    ]
  }
  {
    name: 'messages'
    indexes: [
      {
        key: {
          keys: [
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'userId'
            'createdAt'
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'userId'
            'seqAt'
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'terms'
          ]
        }
      }
      {
        key: {
          keys: [
            'createdAt'
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'createdAt'
          ]
        }
      }
      {
        key: {
          keys: [
            'receivedAt'
          ]
        }
      }
      {
        key: {
          keys: [
            'failedUncounted'
          ]
        }
      }
      {
        key: {
          keys: [
            'uncounted'
          ]
        }
      }
    ]
  }
  {
    name: 'stats'
    indexes: [
      {
        key: {
          keys: [
            '_id'
          ]
        }
      }
    ]
  }
  {
    name: 'tokens'
    indexes: [
      {
        key: {
          keys: [
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'hash'
          ]
        }
        options: {
          unique: true
        }
      }
    ]
  }
  {
    name: 'events'
    indexes: [
      {
        key: {
          keys: [
            '_id'
          ]
        }
      }
      {
        key: {
          keys: [
            'userId'
            'createdAt'
          ]
        }
      }
      {
        key: {
          keys: [
            'subject'
            'createdAt'
          ]
        }
      }
      {
        key: {
          keys: [
            'kind'
            'createdAt'
          ]
        }
      }
    ]
  }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'MongoDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    apiProperties: {
      serverVersion: serverVersion
    }
    capabilities: serverless ? serverlessCapabilities : provisionedCapabilities
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    enableAutomaticFailover: false
    enableMultipleWriteLocations: false
    enableFreeTier: false
    enableAnalyticalStorage: false
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Disabled'
    isVirtualNetworkFilterEnabled: false
    networkAclBypass: 'None'
    backupPolicy: backupPolicy == 'Periodic' ? periodicBackup : continuousBackup
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/mongodbDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
    options: {}
  }
}

resource collections 'Microsoft.DocumentDB/databaseAccounts/mongodbDatabases/collections@2024-11-15' = [
  for collection in mongoCollections: {
    parent: database
    name: collection.name
    properties: {
      resource: {
        id: collection.name
        indexes: collection.indexes
      }
      options: serverless ? {} : autoscaleOptions
    }
  }
]

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource mongoUriSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: keyVault
  name: 'mongodb-uri'
  properties: {
    // #checkov:skip=CKV_AZURE_41: no expiry on purpose: rotation is a redeployment, and an expired version may be refused (SecretExpired), stopping an app nobody redeployed (docs/deployment.md).
    // [0] primary, [1] secondary read-write connection string.
    value: account.listConnectionStrings().connectionStrings[activeKey == 'primary' ? 0 : 1].connectionString
    contentType: 'text/plain'
    attributes: {
      enabled: true
    }
  }
}

output id string = account.id
output name string = account.name
output mongoUriKeyVaultUri string = mongoUriSecret.properties.secretUri
