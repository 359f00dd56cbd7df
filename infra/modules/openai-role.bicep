// Lets the app identity call an Azure OpenAI / AI Services account with Microsoft Entra ID
// (used when AI_ENDPOINT is an Azure host and no AI key is given). Deployed into the account's
// resource group, which may differ from the app's.

@description('Name of the existing Cognitive Services account.')
param accountName string

@description('Principal id of the app identity.')
param principalId string

var cognitiveServicesOpenAiUser = '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource openAiUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, cognitiveServicesOpenAiUser)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesOpenAiUser)
  }
}
